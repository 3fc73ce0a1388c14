// A browser app on its own origin using authgw's cookie sessions
// (contract: docs/browser.md). The refresh token lives only in authgw's
// HttpOnly cookie; the access token only in this module's memory.
const GATEWAY = window.AUTHGW_URL;

let accessToken = null; // never written to storage or to the DOM

const $ = (id) => document.getElementById(id);

/** A credentialed call to authgw; `bearer` adds the in-memory access token. */
async function call(path, { method = 'GET', json, bearer = false } = {}) {
  const headers = { 'X-Requested-With': 'authgw' };
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  if (bearer && accessToken) headers.Authorization = `Bearer ${accessToken}`;
  const res = await fetch(GATEWAY + path, {
    method,
    headers,
    credentials: 'include',
    body: json === undefined ? undefined : JSON.stringify(json),
  });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

function showError(what, reply) {
  const code = reply && reply.body && reply.body.code ? reply.body.code : `HTTP ${reply && reply.status}`;
  $('error').textContent = `${what}: ${code}`;
  $('error').dataset.code = code;
}

function loggedOut(message) {
  accessToken = null;
  $('session').hidden = true;
  $('login-form').hidden = false;
  $('status').textContent = message;
  $('status').dataset.state = 'logged-out';
}

/** With an access token: who am I (Auth API) and who the upstream saw (proxy). */
async function loggedIn() {
  const me = await call('/api/v1/users/me', { bearer: true });
  if (me.status !== 200) {
    showError('users/me', me);
    return loggedOut('Logged out (users/me failed).');
  }
  // The proxied route, authenticated by the access cookie (no Authorization).
  const who = await call('/echo/whoami');
  const seen = who.status === 200 ? (who.body.headers['x-user-login'] || ['(none)'])[0] : `HTTP ${who.status}`;
  $('user-login').textContent = me.body.login;
  $('user-id').textContent = me.body.id;
  $('upstream-login').textContent = seen;
  $('upstream-login').dataset.cookie = who.status === 200 ? (who.body.headers.cookie || []).join('; ') : '';
  $('error').textContent = '';
  $('login-form').hidden = true;
  $('session').hidden = false;
  $('status').textContent = `Logged in as ${me.body.login}.`;
  $('status').dataset.state = 'logged-in';
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const reply = await call('/api/v1/auth/login', {
    method: 'POST',
    json: { login: $('login').value, password: $('password').value, cookie: true },
  });
  if (reply.status !== 200) {
    showError('login', reply);
    return;
  }
  accessToken = reply.body.access_token;
  $('password').value = '';
  await loggedIn();
});

$('post-button').addEventListener('click', async () => {
  const reply = await call('/echo/notes', { method: 'POST', json: { note: 'hello' } });
  $('post-result').textContent = reply.status === 200
    ? `${reply.body.method} reached the upstream as ${(reply.body.headers['x-user-login'] || ['(none)'])[0]}`
    : `refused: ${reply.body && reply.body.code}`;
  $('post-result').dataset.status = String(reply.status);
});

$('logout-button').addEventListener('click', async () => {
  // No Authorization header: the refresh cookie names the session.
  const reply = await call('/api/v1/auth/logout', { method: 'POST' });
  if (reply.status !== 204) {
    showError('logout', reply);
    return;
  }
  loggedOut('Logged out.');
});

// On load: restore the session from the refresh cookie, silently.
const restored = await call('/api/v1/auth/refresh', { method: 'POST' });
if (restored.status === 200) {
  accessToken = restored.body.access_token;
  await loggedIn();
} else {
  loggedOut('Logged out.');
  $('status').dataset.refresh = restored.body && restored.body.code ? restored.body.code : String(restored.status);
}
