// One app, one view per audience: the voters' page, the venue's projector, the operator console.

import { createRouter, createWebHistory } from 'vue-router'
import AudienceView from './views/AudienceView.vue'

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/', name: 'audience', component: AudienceView, meta: { title: 'title.audience' } },
    // The projector and the console load their own code: a phone never downloads it.
    { path: '/screen', name: 'screen', component: () => import('./views/ScreenView.vue'), meta: { title: 'title.screen' } },
    { path: '/admin', name: 'admin', component: () => import('./views/AdminView.vue'), meta: { title: 'title.admin' } },
    { path: '/:rest(.*)*', redirect: '/' },
  ],
})
