import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

// `npm run dev` proxies the API and the vote paths to a running `bandvote up` (default port 8080).
const backend = process.env.BANDVOTE_URL ?? 'http://127.0.0.1:8080'

export default defineConfig({
  plugins: [vue()],
  build: { outDir: 'dist', assetsInlineLimit: 0, chunkSizeWarningLimit: 200 },
  server: {
    proxy: {
      '/api': backend,
      '/grpc': backend,
      '/wasm': backend,
    },
  },
})
