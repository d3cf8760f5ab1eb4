import { createApp } from 'vue'
import AdminApp from './AdminApp.vue'
import App from './App.vue'
import './style.css'

// One build, two pages: the audience's at `/`, the operator console at `/admin`.
const admin = window.location.pathname.replace(/\/$/, '') === '/admin'
createApp(admin ? AdminApp : App).mount('#app')
