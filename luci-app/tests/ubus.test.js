'use strict';
// What the views rely on from the router, pinned against OpenWrt's real programs (the
// router of lib/router.js: uhttpd's /ubus, rpcd with the app's ACL and luci-base.json,
// ubusd, tgtun's daemon), over HTTP as the browser speaks to them. Where one of these
// changes (a new uhttpd, rpcd or ACL), a failure here says what the views now meet.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Router } = require('./lib/router');
const fx = require('./lib/fixtures');

const NOSID = '00000000000000000000000000000000';
let router;

test.before(async () => {
	router = await Router.start({ fixtures: { leases: fx.leases, devices: fx.devices }, config: fx.sampleText() });
});

test.after(async () => {
	if (router) await router.stop();
});

let nextId = 0;
async function rpc(params, method = 'call') {
	const res = await fetch(`${router.base}/ubus`, { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: ++nextId, method, params }) });
	assert.equal(res.status, 200);
	return JSON.parse(await res.text());
}

async function login(user) {
	const r = await rpc([NOSID, 'session', 'login', { username: user, password: router.password(user) }]);
	assert.equal(r.result && r.result[0], 0, `login ${user}: ${JSON.stringify(r)}`);
	const sid = r.result[1].ubus_rpc_session;
	return { sid, call: (object, method, args = {}) => rpc([sid, object, method, args]) };
}

// LuCI's login form (the dispatcher asks rpcd), then a page with the session cookie.
async function page(user, view) {
	const url = router.url(view);
	const form = await fetch(url, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ luci_username: user, luci_password: router.password(user) }) });
	assert.equal(form.status, 302, `login form of ${user}: ${form.status} ${await form.text()}`);
	const cookie = form.headers.get('set-cookie').split(';')[0];
	const res = await fetch(url, { headers: { cookie } });
	const menu = await (await fetch(`${router.base}/cgi-bin/luci/admin/menu`, { headers: { cookie } })).json();
	return { status: res.status, body: await res.text(), menu };
}

test('login: rpcd checks the crypt()ed password of /etc/config/rpcd; a wrong one is ubus status 6; the anonymous session may not read uci', async () => {
	await router.daemon('none');
	const bad = await rpc([NOSID, 'session', 'login', { username: 'root', password: 'wrong' }]);
	assert.deepEqual(bad.result, [6]);
	assert.deepEqual((await rpc([NOSID, 'uci', 'get', { config: 'tgtun' }])).error, { code: -32002, message: 'Access denied' });
	const root = await login('root');
	const got = await root.call('uci', 'get', { config: 'tgtun', section: 'main' });
	assert.equal(got.result[0], 0);
	assert.equal(got.result[1].values['.type'], 'main');
	// A form login, then the page with the session's CSRF token in LuCI's environment.
	const p = await page('root', 'tgtun/status');
	assert.equal(p.status, 200);
	assert.match(p.body, /"token":"[0-9a-f]{32}"/);
});

test('uhttpd looks the object up before the ACL: -32000 when it is not on the bus, -32002 when it is; the daemon answers calls that carry the session', async () => {
	await router.daemon('none');
	assert.deepEqual((await rpc([NOSID, 'tgtun', 'status', {}])).error, { code: -32000, message: 'Object not found' });
	const root = await login('root');
	assert.deepEqual((await root.call('tgtun', 'status')).error, { code: -32000, message: 'Object not found' });
	await router.daemon('real');
	assert.deepEqual((await rpc([NOSID, 'tgtun', 'status', {}])).error, { code: -32002, message: 'Access denied' });
	// uhttpd adds ubus_rpc_session to the arguments: the daemon must take the call anyway.
	const st = await root.call('tgtun', 'status');
	assert.equal(st.result && st.result[0], 0, JSON.stringify(st));
	assert.equal(st.result[1].running, true);
	// update_subscriptions (the status page's button) takes the session too, with or
	// without a subscription's name; a name the config lacks is ubus status 4.
	const all = await root.call('tgtun', 'update_subscriptions');
	assert.equal(all.result && all.result[0], 0, JSON.stringify(all));
	assert.deepEqual(all.result[1].subscriptions.map((s) => s.name), ['myvpn']);
	assert.match(all.result[1].error, /^subscription myvpn \(https:\/\/panel\.example\.org\/<redacted>\): /);
	const one = await root.call('tgtun', 'update_subscriptions', { name: 'myvpn' });
	assert.equal(one.result && one.result[0], 0, JSON.stringify(one));
	assert.deepEqual((await root.call('tgtun', 'update_subscriptions', { name: 'nosuch' })).result, [4, { error: 'no subscription "nosuch"' }]);
	// A method the ACL does not list is refused before it reaches the daemon.
	assert.deepEqual((await root.call('tgtun', 'nosuch')).error, { code: -32002, message: 'Access denied' });
	assert.equal((await rpc(['x', 'uci'])).error.code, -32700);
	assert.equal((await rpc('nonsense', 'frobnicate')).error.code, -32601);
});

test('a login whose ACL lacks luci-app-tgtun: rpcd refuses the views\' calls; LuCI refuses the pages and hides the menu entry', async () => {
	await router.daemon('real');
	const op = await login('operator');
	// Every method the views call (static.test.js holds them to the ACL).
	for (const [object, method] of [['tgtun', 'status'], ['tgtun', 'check'], ['tgtun', 'reload'], ['tgtun', 'update_lists'],
		['tgtun', 'update_subscriptions'], ['luci-rpc', 'getDHCPLeases']])
		assert.deepEqual((await op.call(object, method)).error, { code: -32002, message: 'Access denied' }, `${object}.${method}`);
	// uci is granted by luci-base, the tgtun config is not: rpcd's own permission check.
	assert.deepEqual((await op.call('uci', 'get', { config: 'tgtun' })).result, [6]);
	assert.deepEqual((await op.call('uci', 'set', { config: 'tgtun', section: 'main', values: { enabled: '1' } })).result, [6]);
	const p = await page('operator', 'tgtun/status');
	assert.equal(p.status, 403);
	assert.equal(p.menu.children.admin.children.services.children.tgtun.satisfied, false);
	const r = await page('root', 'tgtun/status');
	assert.equal(r.status, 200);
	assert.equal(r.menu.children.admin.children.services.children.tgtun.satisfied, true);
});

test('uci add with the name of an existing section retypes it, keeping its options (why the proxy grid refuses taken names)', async () => {
	const root = await login('root');
	assert.deepEqual((await root.call('uci', 'add', { config: 'tgtun', type: 'proxy', name: 'main', values: { server: '198.51.100.9' } })).result, [0, { section: 'main' }]);
	const main = (await root.call('uci', 'get', { config: 'tgtun', section: 'main' })).result[1].values;
	assert.equal(main['.type'], 'proxy');
	assert.equal(main.tun_name, 'tgtun0');
	assert.equal(main.server, '198.51.100.9');
});

test('uci set: changes only what differs, an empty string removes the option, an array replaces the list (empty items too); a missing section is status 4', async () => {
	const root = await login('root');
	assert.deepEqual((await root.call('uci', 'set', { config: 'tgtun', section: 'main',
		values: { fail_mode: 'block', tun_name: '', lan_iface: ['br-lan', ''], ipv6: false } })).result, [0]);
	assert.deepEqual((await root.call('uci', 'changes', { config: 'tgtun' })).result[1].changes, [
		['remove', 'main', 'tun_name'], ['remove', 'main', 'lan_iface'], ['list-add', 'main', 'lan_iface', 'br-lan'],
		['list-add', 'main', 'lan_iface', ''], ['set', 'main', 'ipv6', '0']]);
	assert.deepEqual((await root.call('uci', 'set', { config: 'tgtun', section: 'nosuch', values: { a: 'b' } })).result, [4]);
});

test('uci apply with rollback commits at once and holds a second apply (6) until the confirm; nothing to apply is 5; commit and revert are LuCI\'s server side\'s, not the session\'s', async () => {
	router.writeConfig('tgtun', fx.sampleText());
	const root = await login('root');
	assert.deepEqual((await root.call('uci', 'apply', { rollback: true, timeout: 90 })).result, [5]);
	await root.call('uci', 'set', { config: 'tgtun', section: 'main', values: { fail_mode: 'direct' } });
	assert.equal(router.committed('tgtun').find((s) => s['.name'] === 'main').fail_mode, 'block');
	assert.deepEqual((await root.call('uci', 'apply', { rollback: true, timeout: 90 })).result, [0]);
	assert.equal(router.committed('tgtun').find((s) => s['.name'] === 'main').fail_mode, 'direct');
	assert.deepEqual((await root.call('uci', 'apply', { rollback: true, timeout: 90 })).result, [6]);
	assert.deepEqual((await root.call('uci', 'commit', { config: 'tgtun' })).error, { code: -32002, message: 'Access denied' });
	assert.deepEqual((await root.call('uci', 'revert', { config: 'tgtun' })).error, { code: -32002, message: 'Access denied' });
	assert.deepEqual((await root.call('uci', 'confirm')).result, [0]);
	assert.deepEqual((await root.call('uci', 'confirm')).result, [5]);
});
