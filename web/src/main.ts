import { createApp } from 'vue'
import App from './App.vue'
import { i18n } from './i18n'
import { router } from './router'
import './style.css'

router.afterEach((to) => {
  document.title = `bandvote — ${i18n.global.t(String(to.meta.title ?? 'title.audience'))}`
  document.body.dataset.view = String(to.name ?? '')
})

createApp(App).use(i18n).use(router).mount('#app')
