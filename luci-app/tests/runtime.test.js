'use strict';
// The views under LuCI's real client runtime (luci.js, form.js, ui.js, rpc.js, uci.js from
// ../shared/luci, see lib/luci-runtime.js) in headless Chromium, against a router made of
// OpenWrt's own programs (lib/router.js, e2e/lucirouter): uhttpd serves the pages and
// /ubus, and its ubus plugin asks the real rpcd on the real ubusd: session login (root,
// and `operator`, who lacks luci-app-tgtun), the session ACLs from the app's acl.d file and
// luci-base.json, uci staging, apply with rollback and confirm, file. tgtun's daemon runs
// on that ubusd in the router of the test network (e2e/testnet); a fake tgtun object takes
// its place only for states the test network cannot produce. LuCI's server side (login
// form, page shell, apply and confirm endpoints) is a CGI stand-in that does its work
// through the same rpcd (lib/dispatcher.js).
//
// Every /ubus call the page makes is recorded: a call that the session's ACL refuses
// (-32002) fails the test unless the test expects it, so a view that calls what the
// shipped ACL does not grant fails here.
// Screenshots go to e2e/artifacts/luci/ of the repository.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { appDir } = require('./lib/i18n');
const { Browser } = require('./lib/cdp');
const { inkStats } = require('./lib/png');
const { Router } = require('./lib/router');
const fx = require('./lib/fixtures');

const artifacts = path.resolve(appDir, '..', 'e2e', 'artifacts', 'luci');
const NOSID = '00000000000000000000000000000000';
const W = 1280, H = 1200;
let browser, page, router;

test.before(async () => {
	fs.mkdirSync(artifacts, { recursive: true });
	router = await Router.start({ fixtures: { leases: fx.leases, devices: fx.devices }, config: fx.sampleText() });
	browser = await Browser.launch();
	page = await browser.newPage(W, H);
	await page.recordUbus();
});

test.after(async () => {
	if (browser) await browser.close();
	if (router) await router.stop();
});

// `tgtun config check` of this checkout on a config file: [exit status, stderr].
function daemonCheck(file) {
	const r = spawnSync(router.tgtun, ['config', 'check', '-c', file], { encoding: 'utf8', timeout: 30000 });
	return [r.status, r.stderr];
}

// A new router state for a test: /etc/config/tgtun, the tgtun object on the bus ('real':
// the daemon on that file, 'none', or the answers of a fake one), and a new login (a new
// rpcd session, without staged changes).
async function reset({ config = fx.sampleText(), daemon = 'real' } = {}) {
	// The last test's view stops first: its polls (under another login, e.g. one whose
	// ACL lacks tgtun.status) must not land among this test's calls (seen in CI).
	await page.open('about:blank', "location.href === 'about:blank'", 'a blank page');
	router.writeConfig('tgtun', config);
	if (daemon === 'real' && router.mode === 'real') {
		const r = await router.call('tgtun', 'reload');
		assert.equal(r.status, 0, `tgtun reload: ${JSON.stringify(r)}`);
	} else {
		await router.daemon(daemon);
	}
	await router.events();
	await page.logout();
	browser.events.length = 0;
}

// The daemon's answer to a method, called on the bus as root.
async function daemonCall(method) {
	const r = await router.call('tgtun', method);
	assert.equal(r.status, 0, `ubus call tgtun ${method}: ${JSON.stringify(r)}`);
	return r.data;
}

// Polls the daemon's status until fn(status) is truthy.
async function untilStatus(fn, what, timeoutMs = 30000) {
	const end = Date.now() + timeoutMs;
	let st;
	for (;;) {
		st = await daemonCall('status');
		if (fn(st)) return st;
		if (Date.now() > end) throw new Error(`the daemon's status never showed ${what}: ${JSON.stringify(st).slice(0, 3000)}`);
		await new Promise((r) => setTimeout(r, 200));
	}
}

const committedSection = (name) => router.committed('tgtun').find((x) => x['.name'] === name);
const sessionId = () => page.eval('L.env.sessionid');

const SETTINGS_READY = 'document.querySelector("#view .cbi-map") && document.querySelector("#view .cbi-page-actions")';
const STATUS_READY = 'document.querySelector("#tgtun-status")';
const js = (f, ...args) => `(${f})(${args.map((a) => JSON.stringify(a)).join(',')})`;
const text = (sel = 'body') => page.eval(`(document.querySelector(${JSON.stringify(sel)}) || {}).innerText || ''`);
const click = (sel, label) => page.eval(js((sel, label) => {
	const b = [...document.querySelectorAll(sel)].find((e) => label == null || e.textContent.trim() == label);
	if (!b) throw new Error('nothing to click: ' + sel + ' ' + label);
	b.click();
	return true;
}, sel, label));

// Opens a view; on LuCI's login form, logs in (rpcd checks the password).
async function openView(view, ready, user = 'root') {
	await page.open(router.url(view), `${ready} || document.querySelector('#luci_password')`, view);
	if (await page.eval('!!document.querySelector("#luci_password")')) {
		await page.eval(js((user, pw) => {
			document.querySelector('#luci_username').value = user;
			document.querySelector('#luci_password').value = pw;
			document.querySelector('form').submit();
			return true;
		}, user, router.password(user)));
		await page.waitFor(`document.readyState == 'complete' && (${ready})`, `${view} after login`).catch(async (e) => { throw await viewFailure(e); });
	}
	await page.waitFor(ready, view).catch(async (e) => { throw await viewFailure(e); });
}

// A view that did not show: what the page says and its last /ubus calls, for the report.
async function viewFailure(e) {
	const url = await page.eval('location.href').catch(() => '?');
	const body = await text().catch((x) => `(no text: ${x.message})`);
	const calls = page.ubusCalls().slice(-8).map((c) => JSON.stringify({ ...c, data: undefined }));
	return new Error(`${e.message}\nat ${url}; the page says: ${body.slice(0, 1500)}\nlast /ubus calls:\n${calls.join('\n')}\n${router.logs().slice(-3000)}`);
}

async function shot(name) {
	const file = path.join(artifacts, name);
	fs.rmSync(file, { force: true });
	await page.screenshot(file, W, H);
	const st = inkStats(file);
	assert.ok(fs.statSync(file).size > 20000, `${name}: only ${fs.statSync(file).size} bytes`);
	assert.ok(st.width === W && st.height >= H, `${name}: ${st.width}x${st.height}`);
	assert.ok(st.inkRatio > 0.01, `${name}: nearly blank`);
	assert.ok(st.colours > 20, `${name}: only ${st.colours} colours`);
	return file;
}

// No uncaught error in the page, except those matching `expected` (LuCI lets a refused
// Save's rejection go uncaught after showing it); and no /ubus call the session's ACL
// refused, except the object.method names in `denied`.
function noPageErrors(expected, denied = []) {
	const errs = browser.events.filter((e) => e.method === 'Runtime.exceptionThrown')
		.map((e) => e.params.exceptionDetails.exception?.description || e.params.exceptionDetails.text)
		.filter((d) => !(expected && expected.test(d)));
	const refused = page.ubusCalls().filter((c) => c.error === -32002 && !denied.includes(`${c.object}.${c.method}`));
	browser.events.length = 0;
	assert.deepEqual(errs, []);
	assert.deepEqual(refused, [], 'rpcd refused calls of the view: the ACL does not grant them');
}

// Sets a form field as a user would (value + the events LuCI's widgets listen to).
const setField = (sel, value) => page.eval(js((sel, value) => {
	const el = document.querySelector(sel);
	if (!el) throw new Error('no field ' + sel);
	if (el.type == 'checkbox') el.checked = value; else el.value = value;
	for (const ev of ['input', 'keyup', 'change', 'blur']) el.dispatchEvent(new Event(ev, { bubbles: true }));
	return true;
}, sel, value));

const APPLY_DONE = `document.body.innerText.includes('Configuration changes applied.') || document.body.innerText.includes('There are no changes to apply')
	|| document.body.innerText.includes('Save error') || document.body.innerText.includes('Apply request failed')
	|| document.body.innerText.includes('Configuration changes have been rolled back!')`;

// The status page's notification after Refresh subscriptions, whatever the outcome.
const REFRESHED = `['Some subscriptions could not be refreshed', 'Subscriptions refreshed', 'Refreshing the subscriptions failed']
	.some((s) => document.body.innerText.includes(s))`;

// Clicks Save & Apply and waits until LuCI reports the apply's end (confirmed, or not).
async function saveApply(timeoutMs = 20000) {
	await click('#view .cbi-page-actions .cbi-button-apply');
	await page.waitFor(APPLY_DONE, 'the apply to finish', timeoutMs).catch(async (e) => {
		await page.screenshot(path.join(artifacts, 'failed-apply.png'), W, H);
		throw new Error(`${e.message}; the page says: ${(await text()).slice(0, 3000)}`);
	});
	return text();
}

// rpcd has no apply waiting for its confirm (a confirm for another session says so).
async function noPendingApply() {
	const r = await router.call('uci', 'confirm', { ubus_rpc_session: NOSID.slice(1) + '1' });
	assert.equal(r.status, 5, 'an apply is still waiting for its confirm (ubus status 6), or something else went wrong');
}

test('the shipped config (disabled, no server) saves and applies: Enable is judged by the checkbox, not its value attribute', async () => {
	await reset({ config: fx.shippedText(), daemon: 'none' });
	await openView('tgtun/settings', SETTINGS_READY);
	assert.equal(await page.eval('document.querySelector("[data-name=enabled] input[type=checkbox]").checked'), false);
	await setField('[data-name=fail_mode] select', 'direct');
	const body = await saveApply();
	assert.ok(!body.includes('enabled but no proxy has a server'), 'Save refused the shipped config: ' + body.slice(0, 2000));
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 2000));
	assert.equal(committedSection('main').fail_mode, 'direct');
	await noPendingApply();
	// rpcd told procd that tgtun's config changed (procd would run the reload trigger).
	assert.ok((await router.events()).some((e) => e.object === 'service' && e.args.type === 'config.change' && e.args.data.package === 'tgtun'),
		'no config.change event for tgtun');
	// What Save & Apply committed (libuci wrote it) is a config the daemon accepts.
	const [code, stderr] = daemonCheck(router.configPath('tgtun'));
	assert.equal(code, 0, `tgtun config check refused the saved config: ${stderr}\n${router.configText('tgtun')}`);
	// Ticking Enable without a server is still refused, in the daemon's words.
	await page.waitFor(SETTINGS_READY + ' && !document.querySelector(".alert-message")', 'the reloaded view');
	await setField('[data-name=enabled] input[type=checkbox]', true);
	await page.waitFor('document.querySelector("[data-name=enabled] .cbi-input-invalid, [data-name=enabled].cbi-value-invalid")', 'Enable marked invalid');
	await click('#view .cbi-page-actions .cbi-button-save');
	await page.waitFor('document.body.innerText.includes("enabled but no proxy has a server")', 'the error');
	assert.equal(committedSection('main').enabled, '0');
	noPageErrors(/^TypeError: Option "Enable" contains an invalid input value\. enabled but no proxy has a server/);
});

test('LuCI\'s runtime boots through the real /ubus: features, the preload list from rpcd\'s file plugin, the session', async () => {
	await reset({ config: fx.shippedText(), daemon: 'none' });
	await openView('tgtun/settings', SETTINGS_READY);
	const calls = page.ubusCalls();
	const find = (o, m) => calls.find((c) => c.object === o && c.method === m);
	// luci.getFeatures is granted to every session (luci-base.json's unauthenticated group).
	assert.deepEqual(find('luci', 'getFeatures') && find('luci', 'getFeatures').status, 0, JSON.stringify(calls));
	// file.list of <docroot>/luci-static/resources/preload: rpcd's file plugin answers
	// (the directory does not exist: ubus status 4), the ACL lets it through.
	const list = find('file', 'list');
	assert.ok(list && list.error === null && list.status === 4, `file list: ${JSON.stringify(list)}`);
	// The form read tgtun through rpcd's uci, in this session.
	assert.deepEqual(find('uci', 'get') && find('uci', 'get').status, 0, JSON.stringify(calls));
	assert.match(await sessionId(), /^[0-9a-f]{32}$/);
	noPageErrors();
});

test('Save leaves unticked services alone: no service section appears for them', async () => {
	await reset({ config: fx.shippedText(), daemon: 'none' });
	await openView('tgtun/settings', SETTINGS_READY);
	await setField('[data-name=fail_mode] select', 'direct');
	await click('#view .cbi-page-actions .cbi-button-save');
	await page.waitFor(`document.body.innerText.includes('Save error') || document.querySelector('#indicators [data-indicator="uci-changes"]')`, 'the save');
	assert.ok(!(await text()).includes('Save error'), (await text('.modal')));
	// What rpcd staged for this session.
	const r = await router.call('uci', 'changes', { ubus_rpc_session: await sessionId(), config: 'tgtun' });
	assert.equal(r.status, 0, JSON.stringify(r));
	const changes = r.data.changes;
	assert.ok(changes.some((c) => c[0] === 'set' && c[1] === 'main' && c[2] === 'fail_mode'), JSON.stringify(changes));
	assert.deepEqual(changes.filter((c) => c[1] !== 'main'), [], 'Save touched other sections');
	assert.deepEqual(changes.filter((c) => c[0] === 'add' || (c[0] === 'set' && c.length === 3)), [], 'Save created sections');
	noPageErrors();
});

test('status: daemon not running, through uhttpd (-32000): the hint, no stack trace', async () => {
	await reset({ daemon: 'none' });
	await openView('tgtun/status', STATUS_READY);
	const body = await text('#view');
	assert.ok(body.includes('RPC call to tgtun/status failed with error -32000: Object not found'), body);
	assert.ok(body.includes('/etc/init.d/tgtun start'), 'no not-running hint: ' + body);
	assert.doesNotMatch(body, /\n\s+at |luci\.js|rpc\.js/, 'a stack trace is shown');
	// A failing button shows the error without the stack either.
	await click('button', 'Update lists now');
	await page.waitFor('document.querySelector(".alert-message")', 'the notification');
	const note = await text('.alert-message');
	assert.match(note, /Updating the lists failed: RPC call to tgtun\/update_lists failed with error -32000: Object not found/);
	assert.doesNotMatch(note, /\n\s+at |luci\.js|rpc\.js/, 'a stack trace is shown');
	await click('button', 'Refresh subscriptions');
	await page.waitFor('document.body.innerText.includes("Refreshing the subscriptions failed")', 'the notification');
	assert.match(await text(), /Refreshing the subscriptions failed: RPC call to tgtun\/update_subscriptions failed with error -32000: Object not found\n/);
	noPageErrors();
});

test('a new proxy cannot take the name of an existing section (rpcd would retype it)', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const add = '#cbi-tgtun-proxy .cbi-section-create';
	for (const name of ['main', 'telegram', 'primary']) {
		await setField(`${add} input.cbi-section-create-name`, name);
		assert.equal(await page.eval(`document.querySelector('${add} input').classList.contains('cbi-input-invalid')`), true, `${name} accepted`);
		await click(`${add} .cbi-button-add`);
		assert.equal(await page.eval('document.body.classList.contains("modal-overlay-active")'), false, `the editor opened for ${name}`);
	}
	// A fresh name opens the editor.
	await setField(`${add} input.cbi-section-create-name`, 'spare');
	assert.equal(await page.eval(`document.querySelector('${add} input').classList.contains('cbi-input-invalid')`), false);
	await click(`${add} .cbi-button-add`);
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	await click('.modal button', 'Dismiss');
	await page.waitFor('!document.body.classList.contains("modal-overlay-active")', 'the editor to close');
	await click('#view .cbi-page-actions .cbi-button-save');
	await page.waitFor('!document.querySelector(".spinning")', 'the save');
	// main is still a main section in what rpcd holds for this session.
	const r = await router.call('uci', 'get', { ubus_rpc_session: await sessionId(), config: 'tgtun', section: 'main' });
	assert.equal(r.status, 0, JSON.stringify(r));
	assert.equal(r.data.values['.type'], 'main');
	noPageErrors();
});

test('the proxy table shows UDP only for types that carry it', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const cell = (sid, name) => page.eval(`document.querySelector('tr[data-sid=${sid}] td[data-name=${name}]').innerText.trim()`);
	assert.equal(await cell('office', 'udp'), '-', 'http proxy shows UDP');
	assert.equal(await cell('primary', 'udp'), 'Yes');
	assert.equal(await cell('backup', 'udp'), 'Yes');
	noPageErrors();
});

test('status: an ACL without tgtun.status (-32002): the hint that the login lacks the ACL', async () => {
	const file = 'luci-app-tgtun.json';
	const shipped = router.aclText(file);
	const acl = JSON.parse(shipped);
	acl['luci-app-tgtun'].read.ubus.tgtun = acl['luci-app-tgtun'].read.ubus.tgtun.filter((m) => m !== 'status');
	router.writeAcl(file, JSON.stringify(acl));
	try {
		await reset(); // rpcd reads the access lists at login
		await openView('tgtun/status', STATUS_READY);
		const body = await text('#view');
		assert.ok(body.includes('RPC call to tgtun/status failed with error -32002: Access denied'), body);
		assert.ok(body.includes('luci-app-tgtun'), 'no access hint: ' + body);
		// LuCI asks whether the session is still valid (it is): no "Session expired".
		assert.ok(!(await text()).includes('Session expired'), await text());
	} finally {
		router.writeAcl(file, shipped);
	}
	noPageErrors(undefined, ['tgtun.status']);
});

test('proxy editor: a bad value is refused in the daemon\'s words; Save & Apply of a good edit reaches the daemon', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	await click('tr[data-sid=backup] .cbi-button-edit');
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	await setField('.modal [data-name=port] input', '70000');
	await setField('.modal [data-name=cipher] select', '2022-blake3-aes-128-gcm');
	await setField('.modal [data-name=password] input', 'change me');
	await page.waitFor('document.querySelectorAll(".modal .cbi-input-invalid").length >= 2', 'the errors');
	// Saving the editor is refused while a field is invalid; nothing reaches uci.
	await click('.modal button', 'Save');
	assert.equal(await page.eval('document.body.classList.contains("modal-overlay-active")'), true);
	// The messages LuCI shows for the marked fields (as tooltips), from the form itself.
	const errorOf = (name) => page.eval(`(() => { const m = L.dom.findClassInstance(document.querySelector('.modal .cbi-map'));
		const o = m.lookupOption(${JSON.stringify(name)}, 'backup'); return o ? o[0].getValidationError('backup') : 'no option' })()`);
	assert.equal(await errorOf('port'), "port '70000' is out of range 1-65535");
	assert.equal(await errorOf('password'), 'password is not a base64 key of 16 bytes, as 2022-blake3-aes-128-gcm needs');
	// Username is hidden for Shadowsocks; the password is a password field.
	assert.equal(await page.eval('!!document.querySelector(".modal [data-name=username]") && getComputedStyle(document.querySelector(".modal [data-name=username]")).display != "none"'), false);
	assert.equal(await page.eval('document.querySelector(".modal [data-name=password] input").type'), 'password');
	await shot('settings-proxy-invalid.png');
	// Fixed: a good port, a 16-byte base64 key; saved and applied through rpcd.
	await setField('.modal [data-name=port] input', '8443');
	await setField('.modal [data-name=password] input', 'AAECAwQFBgcICQoLDA0ODw==');
	await page.waitFor('document.querySelectorAll(".modal .cbi-input-invalid").length == 0', 'the fields to be valid');
	await click('.modal button', 'Save');
	await page.waitFor('!document.body.classList.contains("modal-overlay-active")', 'the editor to close');
	const body = await saveApply();
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 1500));
	const backup = committedSection('backup');
	assert.deepEqual([backup.port, backup.cipher, backup.password], ['8443', '2022-blake3-aes-128-gcm', 'AAECAwQFBgcICQoLDA0ODw==']);
	// rpcd's config.change made the daemon reload (as procd's reload trigger does).
	await untilStatus((st) => st.proxies.some((p) => p.name === 'backup' && p.server === 'proxy.example.org:8443'), 'backup on port 8443');
	noPageErrors();
});

// The router config with health checks every second, and the daemon once each proxy's
// health has settled: primary (dante) healthy, the ones that do not exist unhealthy.
const FAST_HEALTH = () => fx.sampleText().replace("option health_interval '10s'", "option health_interval '1s'");
// A proxy whose probes time out stays 'unknown' (not checked yet) until a few in a row
// failed: wait for the verdict, which then holds.
const settled = () => untilStatus((s) => s.proxies.every((p) => p.state === (p.name === 'primary' ? 'healthy' : 'unhealthy')) && s.proxies.find((p) => p.name === 'primary').latency > 0,
	'primary healthy, every other proxy unhealthy');

test('status: the page shows what the running daemon reports', async () => {
	// Health checks every second: the proxies that do not exist turn unhealthy soon.
	await reset({ config: FAST_HEALTH() });
	await settled();
	// The subscription's panel has no address in the test network: its fetch fails.
	const st = await untilStatus((s) => s.subscriptions.length > 0 && s.subscriptions.every((x) => x.last_error), 'the subscription\'s failed fetch');
	await openView('tgtun/status', STATUS_READY);
	const rows = await page.eval(`[...document.querySelectorAll('#tgtun-status tr')].map(r => r.innerText)`);
	const row = (name) => rows.find((t) => t.startsWith(name + '\t') || t.startsWith(name + ' ')) || '';
	const types = { socks5: 'SOCKS5', http: 'HTTP', shadowsocks: 'Shadowsocks', vless: 'VLESS', trojan: 'Trojan', interface: 'interface' };
	for (const p of st.proxies) {
		const r = row(p.name);
		assert.ok(r.includes(types[p.type]) && r.includes(p.server), `proxy ${p.name}: ${r}`);
		if (p.name === 'primary' || p.name === 'reality')
			assert.match(r, p.healthy ? /\bhealthy\b/ : /\bunhealthy\b/, `proxy ${p.name}: ${r}`);
		// The error as the daemon words it (up to the addresses that change from probe to probe).
		if (p.last_error) assert.ok(r.includes(p.last_error.split(': ')[0]), `proxy ${p.name} lacks its error ${p.last_error}: ${r}`);
	}
	for (const s of st.services)
		assert.match(row(s.name), new RegExp(`${s.enabled ? 'enabled' : 'off'}\\s+${s.ranges}\\s+${s.domains}\\s+${s.resolved}`), `service ${s.name}`);
	for (const s of st.subscriptions) {
		const r = row(s.name);
		assert.match(r, new RegExp(`^${s.name}\\s+${s.members.length}\\s`), `subscription ${s.name}: ${r}`);
		assert.ok(r.includes(s.last_error.split(': ')[0]), `subscription ${s.name} lacks its error ${s.last_error}: ${r}`);
	}
	const body = await text('#view');
	for (const l of st.lists) assert.ok(body.includes(`${l.name} (${l.kind})`), `list ${l.name}`);
	for (const s of [st.dns.listen, st.dns.upstream, st.dns.dnsmasq, st.config, ...(st.warnings || [])])
		assert.ok(body.includes(s), `status lacks ${s}`);
	noPageErrors();
});

test('status: diagnostics, list update and reload are the daemon\'s, over /ubus', async () => {
	await reset({ config: FAST_HEALTH() });
	await settled();
	await openView('tgtun/status', STATUS_READY);
	await click('button', 'Run diagnostics');
	await page.waitFor('document.querySelector(".modal table") || document.querySelector(".modal").innerText.includes("could not run")', 'the diagnostics', 60000);
	assert.ok(!(await text('.modal')).includes('could not run'), await text('.modal'));
	// The modal shows the steps as the daemon answered the page (through uhttpd and rpcd).
	const answer = page.ubusCalls().find((c) => c.object === 'tgtun' && c.method === 'check');
	assert.ok(answer && answer.status === 0 && answer.data && answer.data.steps.length > 5, JSON.stringify(answer));
	const ck = answer.data;
	assert.ok((await text('.modal')).includes(ck.ok ? 'Everything works.' : 'Something is wrong'));
	const shown = await page.eval(`[...document.querySelectorAll('.modal tr')].slice(1).map(r => [...r.querySelectorAll('td')].map(td => td.innerText.trim()))`);
	assert.deepEqual(shown.map((r) => r[0]), ck.steps.map((s) => s.name));
	ck.steps.forEach((s, i) => {
		assert.equal(shown[i][1], s.ok ? 'ok' : 'failed', s.name);
		assert.ok(shown[i][2].startsWith(s.detail), `${s.name}: ${shown[i][2]} is not ${s.detail}`);
		if (s.hint) assert.ok(shown[i][2].endsWith(`Hint: ${s.hint}`), `${s.name}: ${shown[i][2]} lacks the hint ${s.hint}`);
	});
	// A step of a proxy that does not exist failed, with the daemon's hint.
	assert.ok(ck.steps.some((s) => s.name === "proxy 'office'" && !s.ok && s.hint), JSON.stringify(ck.steps));
	await shot('status-diagnostics.png');
	await click('.modal button', 'Close');
	// The lists' URLs cannot be reached from the test network: the daemon says why.
	await click('button', 'Update lists now');
	await page.waitFor('document.body.innerText.includes("Updating the lists failed")', 'the update notification', 60000);
	assert.match(await text(), /Updating the lists failed: list telegram \(https:\/\/core\.telegram\.org\/resources\/cidr\.txt\): download: /);
	// Nor can the subscription's panel: the daemon's words, the token left out.
	await click('button', 'Refresh subscriptions');
	await page.waitFor(REFRESHED, 'the subscriptions notification', 60000);
	const refreshed = page.ubusCalls().find((c) => c.object === 'tgtun' && c.method === 'update_subscriptions');
	assert.ok(refreshed && refreshed.status === 0 && /^subscription myvpn \(https:\/\/panel\.example\.org\/<redacted>\): .*panel\.example\.org/.test(refreshed.data.error),
		JSON.stringify(refreshed));
	assert.ok((await text()).includes(`Some subscriptions could not be refreshed (their last proxies stay in use): ${refreshed.data.error}`), await text('.alert-message'));
	await click('button', 'Reload configuration');
	await page.waitFor('document.body.innerText.includes("The configuration was reloaded.")', 'the reload notification');
	// Each call reached the daemon through uhttpd and rpcd's ACL check, and it answered.
	const made = page.ubusCalls().filter((c) => c.object === 'tgtun');
	assert.deepEqual([...new Set(made.map((c) => c.method))].sort(), ['check', 'reload', 'status', 'update_lists', 'update_subscriptions']);
	assert.deepEqual(made.filter((c) => c.error !== null || c.status !== 0), [], 'a call to the daemon failed');
	noPageErrors();
});

// The validation error LuCI shows for an option (as the field's tooltip), from the form.
const optError = (name, sid, modal) => page.eval(`(() => {
	const m = L.dom.findClassInstance(document.querySelector(${JSON.stringify(modal ? '.modal .cbi-map' : '#view .cbi-map')}));
	const o = m.lookupOption(${JSON.stringify(name)}, ${JSON.stringify(sid)});
	return o ? o[0].getValidationError(${JSON.stringify(sid)}) : 'no option ${name}';
})()`);
const pbk = 'BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc';
const uuid = '9d5c6f1e-7a4b-4c3d-8e2f-1a2b3c4d5e6f';

test('share links: each kind parses into the proxy options; a link it cannot use names the part', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const ok = [
		['socks5://alice:s%40cret@198.51.100.6:1080#home', { type: 'socks5', server: '198.51.100.6', port: '1080', username: 'alice', password: 's@cret', name: 'home' }],
		['socks://198.51.100.6:1080', { type: 'socks5', server: '198.51.100.6', port: '1080', username: '', password: '' }],
		['http://bob:pw@[2001:db8::5]:3128', { type: 'http', server: '2001:db8::5', port: '3128', username: 'bob', password: 'pw' }],
		[`ss://${Buffer.from('aes-256-gcm:pass').toString('base64url')}@198.51.100.7:8388#x`, { type: 'shadowsocks', cipher: 'aes-256-gcm', password: 'pass', port: '8388' }],
		['ss://2022-blake3-aes-128-gcm:AAECAwQFBgcICQoLDA0ODw%3D%3D@198.51.100.7:8388/', { type: 'shadowsocks', cipher: '2022-blake3-aes-128-gcm', password: 'AAECAwQFBgcICQoLDA0ODw==' }],
		[`ss://${Buffer.from('2022-blake3-chacha20-poly1305:' + Buffer.alloc(32, 7).toString('base64')).toString('base64')}@proxy.example.org:443`, { type: 'shadowsocks', cipher: '2022-blake3-chacha20-poly1305', server: 'proxy.example.org' }],
		[`ss://${Buffer.from('chacha20-ietf-poly1305:pw@198.51.100.7:8388').toString('base64')}#legacy`, { type: 'shadowsocks', cipher: 'chacha20-ietf-poly1305', password: 'pw', server: '198.51.100.7', port: '8388' }],
		[`vless://${uuid}@198.51.100.8:443?type=tcp&encryption=none&security=reality&flow=xtls-rprx-vision&sni=www.example.com&fp=firefox&pbk=${pbk}&sid=0123abcd#r`,
			{ type: 'vless', uuid, security: 'reality', flow: 'xtls-rprx-vision', sni: 'www.example.com', fingerprint: 'firefox', public_key: pbk, short_id: '0123abcd', alpn: [], insecure: '0' }],
		[`vless://${uuid}@vless.example.org:8443?security=tls&sni=vless.example.org&alpn=h2,http%2F1.1&allowInsecure=1`,
			{ type: 'vless', security: 'tls', flow: '', sni: 'vless.example.org', alpn: ['h2', 'http/1.1'], insecure: '1', public_key: '' }],
		['trojan://p%40ss@trojan.example.org:443?sni=example.org&alpn=h2&fp=safari#t', { type: 'trojan', password: 'p@ss', sni: 'example.org', alpn: ['h2'], fingerprint: 'safari' }],
		[`vless://${uuid}@198.51.100.8:443?type=grpc&serviceName=svc&mode=multi&security=reality&sni=www.example.com&pbk=${pbk}&spx=%2F`,
			{ type: 'vless', transport: 'grpc', service_name: 'svc', mode: 'multi', security: 'reality', ignored: [{ param: 'spx', reason: 'REALITY\'s spiderX: tgtun never browses the imitated site' }] }],
		[`vless://${uuid}@198.51.100.8:443?type=ws&path=%2Fws%3Fed%3D2048&host=cdn.example.org&security=tls`,
			{ type: 'vless', transport: 'ws', path: '/ws', early_data: '2048', host: 'cdn.example.org', ignored: [] }],
	];
	const bad = [
		[`vless://${uuid}@198.51.100.8:443?type=kcp&security=reality&pbk=${pbk}`, 'vless link: type=kcp is not supported; tcp, ws, httpupgrade, grpc and xhttp are'],
		[`vless://${uuid}@198.51.100.8:443?security=none`, 'vless link: security=none is not supported; tls or reality is'],
		[`vless://${uuid}@198.51.100.8:443?security=reality`, 'vless link: pbk (the REALITY public key) is missing'],
		[`vless://${uuid}@198.51.100.8:443?security=tls&flow=xtls-rprx-direct`, 'vless link: flow=xtls-rprx-direct is not supported; xtls-rprx-vision or none is'],
		['vless://not-a-uuid@198.51.100.8:443?security=tls', "vless link: uuid 'not-a-uuid' is not a UUID (32 hexadecimal digits, e.g. 9d5c6f1e-7a4b-4c3d-8e2f-1a2b3c4d5e6f)"],
		['trojan://pw@198.51.100.9:443?type=quic', 'trojan link: type=quic is not supported; tcp, ws, httpupgrade, grpc and xhttp are'],
		['hysteria2://pw@198.51.100.9:443', "hysteria2 link: not supported: Hysteria runs over QUIC (UDP) and tgtun's proxies are TCP-based (supported: socks5://, http://, ss://, vless://, trojan://)"],
		[`ss://${Buffer.from('aes-256-gcm:pass').toString('base64url')}@198.51.100.7:8388/?plugin=obfs-local%3Bobfs%3Dhttp`, 'ss link: plugin=obfs-local is not supported; only links without a plugin are'],
		[`ss://${Buffer.from('rc4-md5:pass').toString('base64url')}@198.51.100.7:8388`, 'ss link: cipher rc4-md5 is not supported; one of aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, 2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305 is'],
		['https://u:p@198.51.100.6:443', 'https link: TLS to an HTTP proxy is not supported; use an http:// link'],
		['socks5://198.51.100.6', "socks5 link: the address '198.51.100.6' is not host:port"],
		['socks5://198.51.100.6:70000', "socks5 link: port '70000' is out of range 1-65535"],
		['vmess://eyJ2IjoiMiJ9', 'vmess:// links are not supported; socks5://, http://, ss://, vless:// and trojan:// are'],
		['198.51.100.6:1080', 'not a link: it must start with socks5://, http://, ss://, vless:// or trojan://'],
	];
	const got = await page.eval(`L.require('view.tgtun.settings').then(v => ${JSON.stringify([...ok, ...bad].map((c) => c[0]))}.map(l => {
		try { return v.parseLink(l) } catch (e) { return { error: e.message } } }))`);
	ok.forEach(([link, want], i) => {
		for (const [k, v] of Object.entries(want)) assert.deepEqual(got[i][k], v, `${link}: ${k}`);
		assert.equal(got[i].error, undefined, link);
	});
	bad.forEach(([link, want], i) => assert.deepEqual(got[ok.length + i], { error: want }, link));
	// Pasted text is outside input: mutations of the links above (a fixed pseudo-random
	// sequence) either parse or get the parser's own error, never a JavaScript exception.
	const odd = await page.eval(`L.require('view.tgtun.settings').then(v => {
		let seed = 7; const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
		const seeds = ${JSON.stringify([...ok, ...bad].map((c) => c[0]))}, alphabet = ':/@?#&=%[]._-+~ aA0zZ9\u00e9\u2603';
		const out = [];
		for (let i = 0; i < 3000; i++) {
			let s = seeds[rnd(seeds.length)].split('');
			for (let k = 1 + rnd(4); k > 0; k--) {
				const at = rnd(s.length + 1), op = rnd(3);
				if (op == 0) s.splice(at, 1); else if (op == 1) s.splice(at, 0, alphabet[rnd(alphabet.length)]); else s = s.slice(0, at);
			}
			try { v.parseLink(s.join('')) } catch (e) { if (!e || typeof e.message != 'string' || e instanceof Error) out.push(s.join('') + ' -> ' + e) }
		}
		return out.slice(0, 5);
	})`);
	assert.deepEqual(odd, []);
	noPageErrors();
});


test('proxy editor: Paste link fills a new VLESS+REALITY proxy, fields follow the type, Save & Apply writes it', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const add = '#cbi-tgtun-proxy .cbi-section-create';
	await setField(`${add} input.cbi-section-create-name`, 'pasted');
	await click(`${add} .cbi-button-add`);
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	const visible = (name) => page.eval(`(() => { const r = document.querySelector('.modal [data-name=${name}]'); return !!r && getComputedStyle(r).display != 'none' })()`);
	// A link it cannot use: the field says why, nothing is filled.
	await setField('.modal [data-name=_link] input', `vless://${uuid}@198.51.100.8:443?type=kcp&security=reality&pbk=${pbk}`);
	assert.equal(await optError('_link', 'pasted', true), 'vless link: type=kcp is not supported; tcp, ws, httpupgrade, grpc and xhttp are');
	assert.equal(await page.eval('document.querySelector(".modal [data-name=type] select").value'), 'socks5');
	await setField('.modal [data-name=_link] input',
		`vless://${uuid}@198.51.100.8:443?type=tcp&security=reality&flow=xtls-rprx-vision&sni=www.example.com&fp=firefox&pbk=${pbk}&sid=0123abcd#r`);
	await page.waitFor('document.querySelector(".modal [data-name=type] select").value == "vless"', 'the type to be filled');
	assert.equal(await optError('_link', 'pasted', true), '');
	const val = (name) => page.eval(`document.querySelector('.modal [data-name=${name}] input, .modal [data-name=${name}] select').value`);
	assert.deepEqual([await val('server'), await val('port'), await val('uuid'), await val('security'), await val('flow'), await val('sni'), await val('fingerprint'), await val('public_key'), await val('short_id')],
		['198.51.100.8', '443', uuid, 'reality', 'xtls-rprx-vision', 'www.example.com', 'firefox', pbk, '0123abcd']);
	for (const [name, shown] of [['uuid', true], ['public_key', true], ['short_id', true], ['username', false], ['cipher', false], ['password', false], ['alpn', false], ['insecure', false], ['interface', false], ['udp', true]])
		assert.equal(await visible(name), shown, `${name} ${shown ? 'hidden' : 'shown'} for vless+reality`);
	await shot('settings-proxy-vless.png');
	// Switching to TLS shows ALPN and the certificate switch, hides the REALITY key.
	await setField('.modal [data-name=security] select', 'tls');
	assert.deepEqual([await visible('alpn'), await visible('insecure'), await visible('public_key')], [true, true, false]);
	await setField('.modal [data-name=security] select', 'reality');
	// The interface type has no server or port, only the interface.
	await setField('.modal [data-name=type] select', 'interface');
	assert.deepEqual([await visible('server'), await visible('port'), await visible('interface'), await visible('uuid')], [false, false, true, false]);
	await setField('.modal [data-name=type] select', 'vless');
	await click('.modal button', 'Save');
	await page.waitFor('!document.body.classList.contains("modal-overlay-active")', 'the editor to close');
	const body = await saveApply();
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 1500));
	const sec = committedSection('pasted');
	assert.equal(sec['.type'], 'proxy');
	const opts = Object.fromEntries(Object.entries(sec).filter(([k]) => !k.startsWith('.')));
	assert.deepEqual(opts, { type: 'vless', server: '198.51.100.8', port: '443', uuid, security: 'reality', flow: 'xtls-rprx-vision',
		sni: 'www.example.com', fingerprint: 'firefox', public_key: pbk, short_id: '0123abcd', udp: '1' });
	// The daemon reloaded the applied config: it probes the new proxy.
	await untilStatus((st) => st.proxies.some((p) => p.name === 'pasted' && p.type === 'vless' && p.server === '198.51.100.8:443'), 'the pasted proxy');
	noPageErrors();
});


test('proxy editor: pinned_sha256 and ca_file only for TLS, refused in the daemon\'s words, applied and taken by the daemon', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const visible = (name) => page.eval(`(() => { const r = document.querySelector('.modal [data-name=${name}]'); return !!r && getComputedStyle(r).display != 'none' })()`);
	const setOpt = (name, sid, value) => page.eval(`(() => {
		const o = L.dom.findClassInstance(document.querySelector('.modal .cbi-map')).lookupOption(${JSON.stringify(name)}, ${JSON.stringify(sid)})[0];
		const w = o.getUIElement(${JSON.stringify(sid)}); w.setValue(${JSON.stringify(value)}); w.triggerValidation(); return true })()`);
	// VLESS+REALITY authenticates the server by its key: no certificate fields.
	await click('tr[data-sid=reality] .cbi-button-edit');
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	assert.deepEqual([await visible('pinned_sha256'), await visible('ca_file')], [false, false]);
	await setField('.modal [data-name=security] select', 'tls');
	assert.deepEqual([await visible('pinned_sha256'), await visible('ca_file')], [true, true]);
	await click('.modal button', 'Dismiss');
	await page.waitFor('!document.body.classList.contains("modal-overlay-active")', 'the editor to close');
	// Trojan: a relative CA file, a pin that is not a SHA-256, and both beside insecure.
	await click('tr[data-sid=tro] .cbi-button-edit');
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	assert.deepEqual([await visible('pinned_sha256'), await visible('ca_file')], [true, true]);
	await setField('.modal [data-name=ca_file] input', 'ca.pem');
	assert.equal(await optError('ca_file', 'tro', true), "ca_file 'ca.pem' is not an absolute file path (e.g. '/etc/ssl/my-ca.pem')");
	// A pin is checked as it is typed (LuCI marks the entry field), with the option's message.
	const entry = '.modal [data-name=pinned_sha256] .add-item input[type=text], .modal [data-name=pinned_sha256] .add-item .create-item-input';
	await setField(entry, 'abcd');
	assert.equal(await page.eval(`document.querySelector(${JSON.stringify(entry)}).classList.contains('cbi-input-invalid')`), true, 'a bad pin accepted');
	const pinCheck = (value) => page.eval(`(() => {
		const o = L.dom.findClassInstance(document.querySelector('.modal .cbi-map')).lookupOption('pinned_sha256', 'tro')[0];
		const r = o.validate('tro', ${JSON.stringify(value)}); return r === true ? '' : r })()`);
	assert.equal(await pinCheck('abcd'),
		"pinned_sha256 'abcd' is not a SHA-256 in hex (64 hex digits, ':' between bytes allowed, as `openssl x509 -noout -fingerprint -sha256` prints it)");
	await setField(entry, '');
	const pin = 'AB:'.repeat(31) + 'AB';
	await setOpt('pinned_sha256', 'tro', [pin]);
	assert.equal(await pinCheck(pin), '');
	await setField('.modal [data-name=ca_file] input', '/etc/ssl/my-ca.pem');
	assert.equal(await optError('ca_file', 'tro', true), '');
	await setField('.modal [data-name=insecure] input[type=checkbox]', true);
	const both = "pinned_sha256 and ca_file are not allowed with insecure '1' (insecure skips the certificate check they ask for; remove insecure)";
	await setField('.modal [data-name=ca_file] input', '/etc/ssl/my-ca.pem'); // checked again, beside insecure now
	assert.equal(await optError('ca_file', 'tro', true), both);
	assert.equal(await pinCheck(pin), both);
	// `tgtun config check` says the same of these values.
	const file = path.join(router.dir, 'certs.config');
	fs.writeFileSync(file, fx.sampleText().replace("option sni 'trojan.example.org'",
		"option sni 'trojan.example.org'\n\toption ca_file 'ca.pem'\n\tlist pinned_sha256 'abcd'\n\toption insecure '1'"));
	const [code, stderr] = daemonCheck(file);
	assert.equal(code, 1, stderr);
	for (const msg of ["ca_file 'ca.pem' is not an absolute file path (e.g. '/etc/ssl/my-ca.pem')", "pinned_sha256 'abcd' is not a SHA-256 in hex", both])
		assert.ok(stderr.includes(`proxy 'tro': ${msg}`), `tgtun config check does not say "${msg}":\n${stderr}`);
	// Fixed: the certificate is checked, pinned; saved, applied, the daemon reloads it.
	await setField('.modal [data-name=insecure] input[type=checkbox]', false);
	await setField('.modal [data-name=ca_file] input', '');
	await page.waitFor('document.querySelectorAll(".modal .cbi-input-invalid").length == 0', 'the fields to be valid');
	await click('.modal button', 'Save');
	await page.waitFor('!document.body.classList.contains("modal-overlay-active")', 'the editor to close');
	const before = (await daemonCall('status')).last_reload;
	const body = await saveApply();
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 1500));
	const tro = committedSection('tro');
	assert.deepEqual([tro.pinned_sha256, tro.ca_file, tro.insecure || '0'], [[pin], undefined, '0']);
	const st = await untilStatus((s) => s.last_reload !== before, 'the reload after the apply');
	assert.equal(st.last_reload_error || '', '', 'the daemon refused the applied config');
	noPageErrors();
});

// The tests' config with its subscription myvpn fetched from url.
const withSubscriptionURL = (url, config = fx.sampleText()) => {
	const out = config.replace(/option url 'https:\/\/panel\.example\.org\/sub\/[^']*'/, `option url '${url}'`);
	assert.notEqual(out, config, 'sample.config has no subscription myvpn at https://panel.example.org/sub/…');
	return out;
};
// What a provider's panel sends: two share links the daemon can use (the proxy host's
// dante), named as the provider wrote them, one name with markup; one link it cannot use.
const PANEL_LABELS = ['🇳🇱 NL Amsterdam', 'Москва <img src=x onerror=alert(1)>'];
const panelBody = () => [
	...PANEL_LABELS.map((l) => `socks5://alice:secret@198.51.100.6:1080#${encodeURIComponent(l)}`),
	'vmess://eyJ2IjoiMiJ9',
].join('\n');
const subscriptionOf = (st, name) => (st.subscriptions || []).find((s) => s.name === name);

test('subscriptions editor: the grid hides the URL\'s token; a new one is refused in the daemon\'s words, then applied through rpcd and fetched by the daemon the chosen way', async () => {
	const path0 = '/sub/newsub-5f2a9c';
	const panel = await router.panel({ [path0]: { body: panelBody() } });
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const cell = (sid, name) => page.eval(`document.querySelector('tr[data-sid=${sid}] td[data-name=${name}]').innerText.trim()`);
	assert.equal(await cell('myvpn', 'url'), 'https://panel.example.org/…');
	assert.equal(await cell('myvpn', 'via'), 'the proxy in use');
	assert.ok(!(await text('#cbi-tgtun-subscription')).includes('0123456789abcdef'), 'the grid shows the token');
	const add = '#cbi-tgtun-subscription .cbi-section-create';
	await setField(`${add} input.cbi-section-create-name`, 'newsub');
	await click(`${add} .cbi-button-add`);
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the subscription editor');
	const bad = { url: 'ftp://panel2.example.org/sub/abc', interval: '5m', user_agent: 'Happ ü' };
	for (const [name, value] of Object.entries(bad)) await setField(`.modal [data-name=${name}] input`, value);
	await page.waitFor('document.querySelectorAll(".modal .cbi-input-invalid").length >= 3', 'the errors');
	const want = {
		url: 'url is not an http:// or https:// URL with a host',
		interval: "interval '5m' is out of range 10m-8760h",
		user_agent: "user_agent 'Happ ü' is not a User-Agent (printable ASCII, at most 256 characters)",
	};
	// `tgtun config check` of this checkout on the same values says the same.
	const file = path.join(router.dir, 'newsub.config');
	fs.writeFileSync(file, fx.sampleText() + `\nconfig subscription 'newsub'\n` + Object.entries(bad).map(([k, v]) => `\toption ${k} '${v}'\n`).join(''));
	const [code, stderr] = daemonCheck(file);
	assert.equal(code, 1, stderr);
	for (const [name, msg] of Object.entries(want)) {
		assert.equal(await optError(name, 'newsub', true), msg, name);
		assert.ok(stderr.includes(`subscription 'newsub': ${msg}\n`), `tgtun config check does not say "${msg}":\n${stderr}`);
	}
	// Saving the editor is refused while a field is invalid.
	await click('.modal button', 'Save');
	assert.equal(await page.eval('document.body.classList.contains("modal-overlay-active")'), true);
	// Fetch through: the proxy in use, directly, or any proxy section (the daemon's check
	// takes every one; an interface proxy too).
	const vias = await page.eval('[...document.querySelectorAll(".modal [data-name=via] select option")].map(o => o.value)');
	const proxies = router.committed('tgtun').filter((x) => x['.type'] === 'proxy').map((x) => x['.name']);
	assert.ok(proxies.includes('wg'), 'the config has no interface proxy');
	assert.deepEqual(vias, ['', 'direct', ...proxies]);
	await setField('.modal [data-name=url] input', panel.url + path0);
	await setField('.modal [data-name=interval] input', '6h');
	await setField('.modal [data-name=user_agent] input', '');
	await setField('.modal [data-name=via] select', 'direct');
	await page.waitFor('document.querySelectorAll(".modal .cbi-input-invalid").length == 0', 'the fields to be valid');
	await shot('settings-subscription.png');
	await click('.modal button', 'Save');
	await page.waitFor('!document.body.classList.contains("modal-overlay-active")', 'the editor to close');
	const body = await saveApply();
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 1500));
	const sec = committedSection('newsub');
	assert.equal(sec['.type'], 'subscription');
	assert.deepEqual([sec.url, sec.interval, sec.via, sec.user_agent], [panel.url + path0, '6h', 'direct', undefined]);
	// The daemon reloaded the applied config and fetched the new subscription directly.
	const st = await untilStatus((s) => { const n = subscriptionOf(s, 'newsub'); return n && n.members.length === 2; }, 'newsub with two members');
	const got = subscriptionOf(st, 'newsub');
	assert.deepEqual([got.via, got.fetched_via, got.interval, got.skipped, got.members.map((m) => m.label)], ['direct', 'direct', '6h0m0s', 1, PANEL_LABELS]);
	assert.ok((await router.panel()).requests[path0] >= 1, 'the panel was never asked');
	noPageErrors();
});

test('subscriptions status: the daemon\'s members with the provider\'s names as text, traffic, expiry; Refresh subscriptions reaches the daemon through rpcd\'s ACL; a failed refresh keeps the members and shows the error', async () => {
	const path0 = '/sub/0123456789abcdef';
	const userinfo = `upload=1073741824; download=2147483648; total=107374182400; expire=${Date.UTC(2027, 2, 1) / 1000}`;
	const panel = await router.panel({ [path0]: { body: panelBody(), headers: { 'subscription-userinfo': userinfo } } });
	await reset({ config: withSubscriptionURL(panel.url + path0) });
	const st = await untilStatus((s) => { const m = subscriptionOf(s, 'myvpn'); return m && m.members.length === 2; }, 'myvpn with two members');
	const sub = subscriptionOf(st, 'myvpn');
	assert.deepEqual(sub.members.map((m) => m.label), PANEL_LABELS);
	assert.equal(sub.last_error || '', '');
	await openView('tgtun/status', STATUS_READY);
	// The subscriptions table's row of myvpn (member proxies have rows of their own above).
	const SUB_ROW = `(() => { const r = [...document.querySelectorAll('#tgtun-status tr')]
		.find(r => r.querySelector('td') && r.querySelector('td').innerText.trim() == 'myvpn'); return r ? r.innerText : '' })()`;
	const subRow = () => page.eval(SUB_ROW);
	const markup = () => page.eval('document.querySelectorAll("#tgtun-status img, #tgtun-status b, .alert-message img, .alert-message b").length');
	const members = `2: ${sub.members.map((m) => `${m.name} (${m.label})`).join(', ')}`;
	let row = await subRow();
	for (const s of [members, '1 links skipped (not usable)', '3.0 GiB of 100.0 GiB', '2027-03-01', '(downloaded)'])
		assert.ok(row.includes(s), `the subscription row lacks ${s}: ${row}`);
	assert.ok(!row.includes('The proxies from the last good refresh'), row);
	assert.equal(await markup(), 0, 'a provider\'s link name became markup');
	// The panel breaks, with a status line in its own words (and markup); the button asks
	// the daemon to refresh now.
	const asked = (await router.panel()).requests[path0];
	await router.panel({ [path0]: { status: 503, reason: 'Service <b>Unavailable</b>' } });
	const made = page.ubusCalls().length;
	await click('button', 'Refresh subscriptions');
	await page.waitFor(REFRESHED, 'the notification', 60000);
	const error = `subscription myvpn (${panel.url}/<redacted>): HTTP 503 Service <b>Unavailable</b>`;
	const note = await text('.alert-message');
	assert.ok(note.includes(`Some subscriptions could not be refreshed (their last proxies stay in use): ${error}`), note);
	assert.ok((await router.panel()).requests[path0] > asked, 'the daemon did not ask the panel again');
	// The call went through uhttpd and rpcd's ACL to the daemon, which answered it.
	const calls = page.ubusCalls().slice(made).filter((c) => c.object === 'tgtun' && c.method === 'update_subscriptions');
	assert.equal(calls.length, 1, JSON.stringify(calls));
	assert.deepEqual([calls[0].error, calls[0].status, calls[0].data.error], [null, 0, error]);
	// The page refreshed: the error, and the members of the last good refresh kept.
	await page.waitFor(`${SUB_ROW}.includes('HTTP 503')`, 'the error in the row').catch(async () => {
		throw new Error(`the row shows no error: ${await subRow()}`);
	});
	row = await subRow();
	for (const s of [members, 'HTTP 503 Service <b>Unavailable</b>', 'The proxies from the last good refresh stay in use.', '3.0 GiB of 100.0 GiB', '2027-03-01'])
		assert.ok(row.includes(s), `the subscription row lacks ${s}: ${row}`);
	assert.equal(await markup(), 0, 'a provider\'s text became markup');
	await shot('status-subscription.png');
	noPageErrors();
});

test('proxy editor: Paste link fills an XHTTP proxy, shows the transport\'s fields and what the link carries unused, Save & Apply writes it', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const add = '#cbi-tgtun-proxy .cbi-section-create';
	await setField(`${add} input.cbi-section-create-name`, 'xh');
	await click(`${add} .cbi-button-add`);
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	const visible = (name) => page.eval(`(() => { const r = document.querySelector('.modal [data-name=${name}]'); return !!r && getComputedStyle(r).display != 'none' })()`);
	const extra = '{"xPaddingBytes":"100-1000","noSSEHeader":true}';
	await setField('.modal [data-name=_link] input', `vless://${uuid}@198.51.100.8:443?type=xhttp&path=%2Fxh&mode=packet-up&extra=${encodeURIComponent(extra)}&security=reality&sni=www.example.com&fp=chrome&pbk=${pbk}&sid=0123abcd&spx=%2F#x`);
	await page.waitFor('document.querySelector(".modal [data-name=transport] select").value == "xhttp"', 'the transport to be filled');
	for (const [name, shown] of [['path', true], ['host', true], ['mode', true], ['padding_bytes', true], ['extra', true], ['service_name', false], ['early_data', false]])
		assert.equal(await visible(name), shown, `${name} ${shown ? 'hidden' : 'shown'} for xhttp`);
	const note = await page.eval('[...document.querySelectorAll(".alert-message")].map(e => e.innerText).join("\\n")');
	assert.match(note, /Not used from the link: .*spx \(REALITY's spiderX/);
	assert.match(note, /extra\.noSSEHeader \(a server setting\)/);
	// gRPC shows its service name instead of the path; Vision is refused over a transport.
	await setField('.modal [data-name=transport] select', 'grpc');
	assert.deepEqual([await visible('service_name'), await visible('path'), await visible('extra')], [true, false, false]);
	await setField('.modal [data-name=flow] select', 'xtls-rprx-vision');
	assert.equal(await optError('transport', 'xh', true), "transport 'grpc' is not allowed with flow xtls-rprx-vision (Vision needs transport 'tcp'; Xray refuses it over other transports)");
	await setField('.modal [data-name=flow] select', '');
	await setField('.modal [data-name=transport] select', 'xhttp');
	await click('.modal button', 'Save');
	await page.waitFor('!document.body.classList.contains("modal-overlay-active")', 'the editor to close');
	const body = await saveApply();
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 1500));
	const sec = committedSection('xh');
	const opts = Object.fromEntries(Object.entries(sec).filter(([k]) => !k.startsWith('.')));
	assert.deepEqual(opts, { type: 'vless', server: '198.51.100.8', port: '443', uuid, security: 'reality', sni: 'www.example.com',
		fingerprint: 'chrome', public_key: pbk, short_id: '0123abcd', transport: 'xhttp', path: '/xh', mode: 'packet-up', extra, udp: '1' });
	// The daemon reloaded the applied config and dials the new proxy through its transport
	// (its errors name it: the server is not there in the test network).
	await untilStatus((st) => st.proxies.some((p) => p.name === 'xh' && (p.last_error || '').includes('vless+xhttp+reality 198.51.100.8:443')),
		'the pasted XHTTP proxy probed', 60000);
	noPageErrors();
});

test('services tab: five services with the daemon\'s counts; ticking one creates its section and the daemon takes it', async () => {
	await reset();
	const st = await daemonCall('status');
	await openView('tgtun/settings', SETTINGS_READY);
	await click('.cbi-tabmenu li[data-tab=services] a');
	const rows = await page.eval(`[...document.querySelectorAll('[data-tab=services] .cbi-value[data-name^=_service_]')]
		.map(r => [r.dataset.name.slice(9), r.querySelector('input').checked, r.querySelector('.cbi-value-description').innerText])`);
	assert.deepEqual(rows.map((r) => r[0]), ['telegram', 'whatsapp', 'signal', 'discord', 'viber']);
	assert.deepEqual(rows.map((r) => r[1]), [true, false, false, false, false]);
	for (const [name, , counts] of rows) {
		const s = st.services.find((x) => x.name === name);
		assert.ok(s, `the daemon has no service ${name}`);
		assert.equal(counts, `${s.ranges} ranges, ${s.domains} domains, ${s.resolved} addresses resolved from them`, name);
	}
	await shot('settings-services.png');
	await setField('[data-name=_service_signal] input[type=checkbox]', true);
	const body = await saveApply();
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 1500));
	const svc = router.committed('tgtun').filter((x) => x['.type'] === 'service').map((x) => [x['.name'], x.enabled]);
	assert.deepEqual(svc, [['telegram', '1'], ['signal', '1']]);
	await untilStatus((s) => s.services.some((x) => x.name === 'signal' && x.enabled), 'signal enabled');
	noPageErrors();
});

test('devices, DNS, per-device cap and custom domains: choices from DHCP leases, errors in the daemon\'s words, applied', async () => {
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	await click('.cbi-tabmenu li[data-tab=devices] a');
	const choices = await page.eval(`[...document.querySelectorAll('[data-name=include_device] li[data-value]')].map(li => li.dataset.value + ' = ' + li.innerText.trim())`);
	assert.ok(choices.includes('02:00:00:00:aa:01 = anna-phone (02:00:00:00:aa:01, 192.168.1.23)'), choices.join('\n'));
	assert.ok(choices.includes('192.168.1.40 = tv (192.168.1.40)'), choices.join('\n'));
	const setOpt = (name, sid, value) => page.eval(`(() => {
		const m = L.dom.findClassInstance(document.querySelector('#view .cbi-map'));
		const o = m.lookupOption(${JSON.stringify(name)}, ${JSON.stringify(sid)})[0];
		const w = o.getUIElement(${JSON.stringify(sid)}); w.setValue(${JSON.stringify(value)}); w.triggerValidation(); return true })()`);
	// A list entry is checked as it is typed (LuCI marks the entry field), with the option's message.
	const listCheck = (name, sid, value) => page.eval(`(() => {
		const m = L.dom.findClassInstance(document.querySelector('#view .cbi-map'));
		const o = m.lookupOption(${JSON.stringify(name)}, ${JSON.stringify(sid)})[0];
		const r = o.validate(${JSON.stringify(sid)}, ${JSON.stringify(value)}); return r === true ? '' : r })()`);
	const typed = async (name, value) => {
		const sel = `[data-name=${name}] .add-item input[type=text], [data-name=${name}] .add-item .create-item-input`;
		await setField(sel, value);
		return page.eval(`document.querySelector(${JSON.stringify(sel)}).classList.contains('cbi-input-invalid')`);
	};
	assert.equal(await typed('include_device', 'laptop'), true, 'laptop accepted as a device');
	assert.equal(await listCheck('include_device', 'main', 'laptop'), "include_device 'laptop' is not an IP address, CIDR prefix or MAC address (e.g. '192.168.1.20', '192.168.1.0/28', '2001:db8::20', 'aa:bb:cc:dd:ee:ff')");
	assert.equal(await listCheck('include_device', 'main', '00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01'), "include_device '00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01' is not a 6-byte MAC address (aa:bb:cc:dd:ee:ff)");
	assert.equal(await listCheck('include_device', 'main', '::ffff:192.168.1.0/120'), "include_device '::ffff:192.168.1.0/120' is an IPv4-mapped IPv6 prefix; write the IPv4 prefix");
	for (const good of ['192.168.1.20', '192.168.1.7/24', '2001:db8::20', 'AA:BB:CC:DD:EE:FF', 'aa-bb-cc-dd-ee-ff'])
		assert.equal(await listCheck('include_device', 'main', good), '', good);
	assert.equal(await typed('include_device', 'aa:bb:cc:dd:ee:ff'), false);
	assert.equal(await typed('include_device', ''), false);
	await setOpt('include_device', 'main', ['02:00:00:00:aa:01', '192.168.1.0/28']);
	await setOpt('exclude_device', 'main', ['192.168.1.40']);
	await shot('settings-devices.png');
	await click('.cbi-tabmenu li[data-tab=dns] a');
	await setOpt('dns_upstream', 'main', 'dns.google');
	assert.equal(await optError('dns_upstream', 'main'), "dns_upstream 'dns.google' is not an IP address with an optional port, or an https:// URL (e.g. '1.1.1.1', '9.9.9.9:53', '[2606:4700:4700::1111]:53', 'https://1.1.1.1/dns-query')");
	await setField('[data-name=dns_port] input', '0');
	assert.equal(await optError('dns_port', 'main'), "dns_port '0' is out of range 1-65535");
	await setOpt('dns_upstream', 'main', 'https://1.1.1.1/dns-query');
	await setField('[data-name=dns_port] input', '5399');
	await shot('settings-dns.png');
	await click('.cbi-tabmenu li[data-tab=advanced] a');
	await setField('[data-name=max_flows_per_device] input', '5000');
	assert.equal(await optError('max_flows_per_device', 'main'), "max_flows_per_device '5000' is out of range 1-4096 (at most max_flows)");
	await setField('[data-name=max_flows_per_device] input', '512');
	const custom = router.committed('tgtun').find((x) => x['.type'] === 'custom')['.name'];
	assert.equal(await typed('domain', '-bad-.org'), true, 'a bad domain accepted');
	assert.equal(await listCheck('domain', custom, '-bad-.org'), `domain "-bad-.org" has a label starting or ending with '-'`);
	assert.equal(await listCheck('domain', custom, 'org'), 'domain "org" is a top-level domain alone (it would send the whole TLD through the proxy)');
	assert.equal(await listCheck('domain', custom, 'a.*.org'), `domain "a.*.org": only a leading '*.' is allowed (a domain covers its subdomains anyway)`);
	assert.equal(await listCheck('domain', custom, '192.0.2.1'), 'domain "192.0.2.1" looks like an IP address, not a domain');
	assert.equal(await listCheck('domain', custom, '*.Example.ORG.'), '');
	await typed('domain', '');
	await setOpt('domain', custom, ['example.org', 'cdn.example.net']);
	const body = await saveApply();
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 1500));
	const main = committedSection('main');
	assert.deepEqual([main.include_device, main.exclude_device, main.dns_upstream, main.dns_port, main.max_flows_per_device],
		[['02:00:00:00:aa:01', '192.168.1.0/28'], ['192.168.1.40'], 'https://1.1.1.1/dns-query', '5399', '512']);
	assert.deepEqual(committedSection(custom).domain, ['example.org', 'cdn.example.net']);
	noPageErrors();
});


test('Save & Apply that is not confirmed in time: rpcd rolls the config back, LuCI says so, the session keeps its changes', async () => {
	await reset();
	const before = router.configText('tgtun');
	// rpcd's window: long enough that LuCI's first confirm (after its hold-off) comes
	// inside it on a loaded machine; one that came after 5 s found nothing pending, got
	// 204 and showed "applied" (seen in CI).
	router.setRollback(12);
	router.blockConfirm(true);
	try {
		await openView('tgtun/settings', SETTINGS_READY);
		await setField('[data-name=fail_mode] select', 'direct');
		await click('#view .cbi-page-actions .cbi-button-apply');
		// Applied: rpcd committed the file and told procd; the daemon took it.
		await untilStatus((st) => st.fail_mode === 'direct', 'fail_mode direct after the apply', 10000);
		assert.equal(committedSection('main').fail_mode, 'direct');
		// No confirm reaches the router: rpcd restores the file after 12 s, LuCI reports it.
		await page.waitFor(APPLY_DONE, 'the rollback', 30000);
		assert.ok((await text()).includes('Configuration changes have been rolled back!'), await text());
		assert.equal(router.configText('tgtun'), before, 'the config file was not restored');
		await untilStatus((st) => st.fail_mode === 'block', 'fail_mode block after the rollback', 10000);
		const events = (await router.events()).filter((e) => e.object === 'service' && e.args.data && e.args.data.package === 'tgtun');
		assert.equal(events.length, 2, `config.change of tgtun for the apply and for the rollback: ${JSON.stringify(events)}`);
		// The change is staged again in the session that applied it.
		const r = await router.call('uci', 'changes', { ubus_rpc_session: await sessionId(), config: 'tgtun' });
		assert.ok(r.status === 0 && r.data.changes.some((c) => c.join() === 'set,main,fail_mode,direct'), JSON.stringify(r));
		await noPendingApply();
	} finally {
		router.blockConfirm(false);
		router.setRollback(90);
	}
	noPageErrors();
});

test('status of a daemon in states the test network lacks: REALITY and Trojan health with hints, services, DNS, per-device cap', async () => {
	await reset({ daemon: fx.tgtunAnswers() });
	await openView('tgtun/status', STATUS_READY);
	const row = (name) => page.eval(`[...document.querySelectorAll('#tgtun-status tr')].map(r => r.innerText).find(t => t.startsWith(${JSON.stringify(name)})) || ''`);
	assert.match(await row('reality'), /VLESS\s+198\.51\.100\.8:443\s+unhealthy[\s\S]*REALITY handshake failed: server did not prove the key[\s\S]*Hint: wrong public_key or short_id\?/);
	assert.match(await row('tro'), /Trojan\s+trojan\.example\.org:443\s+healthy\s+61 ms/);
	assert.match(await row('wg'), /interface\s+wg0\s+healthy/);
	assert.match(await row('telegram'), /telegram\s+enabled\s+14\s+9\s+31/);
	const body = await text('#view');
	for (const s of ['127.0.0.1:5354', '1.1.1.1:53', 'Limit per device', '1024 connections; refused over it: 2', '192.168.1.23: 3 connections'])
		assert.ok(body.includes(s), `status lacks ${s}`);
	// dnsmasq without nftset support: the text shows as an error.
	const st = fx.status();
	st.dns.dnsmasq = 'dnsmasq has no nftset support: install dnsmasq-full';
	await reset({ daemon: fx.tgtunAnswers(st) });
	await openView('tgtun/status', STATUS_READY);
	assert.ok((await text('#view')).includes('dnsmasq has no nftset support: install dnsmasq-full'));
	noPageErrors();
});


test('markup in the daemon\'s, servers\' and links\' text shows as text: status, diagnostics, Paste link notes', async () => {
	// A proxy server's answer, a provider's subscription, a pasted link: all outside input.
	const evil = (tag) => `<img src=x onerror="window.__tgtunInjected='${tag}'">`;
	const st = fx.status();
	st.proxies[2].last_error = `http 198.51.100.20:3128: CONNECT 149.154.167.51:443: 403 ${evil('proxy')}`;
	st.net_error = `rule: ${evil('net')}`;
	st.warnings = [`warning ${evil('warning')}`];
	const ck = fx.check();
	ck.steps[0].detail = `step ${evil('check')}`;
	await reset({ daemon: fx.tgtunAnswers(st, ck) });
	await openView('tgtun/status', STATUS_READY);
	const body = await text('#view');
	for (const tag of ['proxy', 'net', 'warning'])
		assert.ok(body.includes(evil(tag)), `the ${tag} text is not shown as text`);
	await click('button', 'Run diagnostics');
	await page.waitFor('document.querySelector(".modal table")', 'the diagnostics');
	assert.ok((await text('.modal')).includes(evil('check')), 'the diagnostics detail is not shown as text');
	await click('.modal button', 'Close');
	await reset();
	await openView('tgtun/settings', SETTINGS_READY);
	const add = '#cbi-tgtun-proxy .cbi-section-create';
	await setField(`${add} input.cbi-section-create-name`, 'marked');
	await click(`${add} .cbi-button-add`);
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	await setField('.modal [data-name=_link] input', `trojan://pw@198.51.100.9:443?security=tls&${encodeURIComponent(evil('link'))}=1`);
	await page.waitFor('document.querySelector(".modal [data-name=type] select").value == "trojan"', 'the type to be filled');
	const note = await page.eval('[...document.querySelectorAll(".alert-message")].map(e => e.innerText).join("\\n")');
	assert.ok(note.includes(evil('link').slice(0, 40)), `the link's parameter is not shown as text: ${note}`);
	assert.equal(await page.eval('window.__tgtunInjected || ""'), '', 'markup from outside input ran in the page');
	assert.equal(await page.eval('document.querySelectorAll("img[src=x]").length'), 0);
	noPageErrors();
});

test('screenshots: settings and status, English and Russian', async () => {
	try {
		for (const lang of ['en', 'ru']) {
			router.setLang(lang);
			await reset();
			await openView('tgtun/settings', SETTINGS_READY);
			if (lang === 'ru') assert.ok((await text()).includes('Применить'), 'LuCI\'s own strings are not in Russian');
			await shot(`settings-${lang}.png`);
			await click('.cbi-tabmenu li[data-tab=services] a');
			await shot(`settings-services-${lang}.png`);
			await click('tr[data-sid=reality] .cbi-button-edit');
			await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
			if (lang === 'ru') assert.ok((await text('.modal')).includes('Вставить ссылку'), 'the editor is not in Russian');
			await shot(`settings-proxy-vless-${lang}.png`);
			// The status of a daemon with every kind of proxy, healthy and not (a fake one:
			// the test network has no REALITY or Trojan server).
			await reset({ daemon: fx.tgtunAnswers() });
			await openView('tgtun/status', STATUS_READY);
			if (lang === 'ru') assert.ok((await text('#view')).includes('Адреса из доменов'), 'the status is not in Russian');
			await shot(`status-${lang}.png`);
			noPageErrors();
		}
	} finally {
		router.setLang('en');
	}
});
