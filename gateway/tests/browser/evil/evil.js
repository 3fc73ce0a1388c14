// The attacker's page: point the forms at the gateway and offer credentialed
// fetch attempts (which the browser must block: the gateway sends no
// Access-Control-Allow-Origin for this origin).
for (const form of document.querySelectorAll('form[data-path]')) {
  form.action = window.AUTHGW_URL + form.dataset.path;
}

/** Runs one fetch; reports how it ended (a TypeError when the browser blocks it). */
async function attempt(path, init) {
  try {
    const res = await fetch(window.AUTHGW_URL + path, { credentials: 'include', ...init });
    return { outcome: 'response', status: res.status, body: await res.text() };
  } catch (e) {
    return { outcome: e.name, message: String(e.message) };
  }
}

window.attempts = {
  // A simple GET: sent with the cookies, its answer unreadable.
  me: () => attempt('/api/v1/users/me'),
  // Needs a preflight (custom header), which the gateway does not allow.
  refreshWithHeader: () =>
    attempt('/api/v1/auth/refresh', { method: 'POST', headers: { 'X-Requested-With': 'authgw' } }),
  // A simple POST without the header: sent, refused by the CSRF check, unreadable.
  refreshSimple: () => attempt('/api/v1/auth/refresh', { method: 'POST' }),
  logoutAllSimple: () => attempt('/api/v1/auth/logout-all', { method: 'POST' }),
};
