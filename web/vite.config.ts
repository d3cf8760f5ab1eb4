import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vite'

// `npm run dev` proxies the API and the vote paths to a running `bandvote up` (default port 8080).
const backend = process.env.BANDVOTE_URL ?? 'http://127.0.0.1:8080'

export default defineConfig({
  plugins: [vue()],
  // vue-i18n's build flags: the Composition API only, no devtools in production.
  define: {
    __VUE_I18N_FULL_INSTALL__: true,
    __VUE_I18N_LEGACY_API__: false,
    __INTLIFY_PROD_DEVTOOLS__: false,
  },
  build: { outDir: 'dist', assetsInlineLimit: 0, chunkSizeWarningLimit: 200 },
  server: {
    proxy: {
      '/api': backend,
      '/grpc': backend,
      '/wasm': backend,
      '/readyz': backend,
    },
  },
})
