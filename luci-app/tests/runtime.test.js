'use strict';
// The views under LuCI's real client runtime (luci.js, form.js, ui.js, rpc.js, uci.js from
// ../shared/luci, see lib/luci-runtime.js) in headless Chromium, against a server that
// answers as uhttpd + rpcd + LuCI's dispatcher do (lib/rpcd.js): login, the page shell,
// /ubus JSON-RPC with ACLs and rpcd's uci semantics, Save & Apply with rollback/confirm.
// Screenshots go to e2e/artifacts/luci/ of the repository.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { appDir } = require('./lib/i18n');
const { Browser } = require('./lib/cdp');
const { inkStats } = require('./lib/png');
const { Rpcd, start } = require('./lib/rpcd');
const fx = require('./lib/fixtures');

const artifacts = path.resolve(appDir, '..', 'e2e', 'artifacts', 'luci');
const W = 1280, H = 1200;
let browser, web, page, rpcd;

test.before(async () => {
	fs.mkdirSync(artifacts, { recursive: true });
	rpcd = new Rpcd({ configs: { tgtun: fx.shippedConfig() }, devices: fx.devices, leases: fx.leases });
	web = await start(rpcd);
	browser = await Browser.launch();
	page = await browser.newPage(W, H);
});

test.after(async () => {
	if (browser) await browser.close();
	if (web) web.server.close();
});

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

async function openView(view, ready) {
	await page.open(web.url(view), `${ready} || document.querySelector('#luci_password')`, view);
	if (await page.eval('!!document.querySelector("#luci_password")')) {
		// The login form, as LuCI's sysauth shows it: posts the password, gets the session cookie.
		await page.eval(`(() => { document.querySelector('#luci_password').value = 'secret'; document.querySelector('form').submit(); return true })()`);
		await page.waitFor(`document.readyState == 'complete' && ${ready}`, `${view} after login`);
	}
	await page.waitFor(ready, view);
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
// Save's rejection go uncaught after showing it).
function noPageErrors(expected) {
	const errs = browser.events.filter((e) => e.method === 'Runtime.exceptionThrown')
		.map((e) => e.params.exceptionDetails.exception?.description || e.params.exceptionDetails.text)
		.filter((d) => !(expected && expected.test(d)));
	browser.events.length = 0;
	assert.deepEqual(errs, []);
}

// Sets a form field as a user would (value + the events LuCI's widgets listen to).
const setField = (sel, value) => page.eval(js((sel, value) => {
	const el = document.querySelector(sel);
	if (!el) throw new Error('no field ' + sel);
	if (el.type == 'checkbox') el.checked = value; else el.value = value;
	for (const ev of ['input', 'keyup', 'change', 'blur']) el.dispatchEvent(new Event(ev, { bubbles: true }));
	return true;
}, sel, value));

// Clicks Save & Apply and waits until the rpcd-like server has the apply confirmed.
async function saveApply() {
	await click('#view .cbi-page-actions .cbi-button-apply');
	await page.waitFor(`document.body.innerText.includes('Configuration changes applied.') || document.body.innerText.includes('There are no changes to apply')
		|| document.body.innerText.includes('Save error') || document.body.innerText.includes('Apply request failed')`, 'the apply to finish').catch(async (e) => {
		await page.screenshot(path.join(artifacts, 'failed-apply.png'), W, H);
		throw new Error(`${e.message}; the page says: ${(await text()).slice(0, 3000)}`);
	});
	return text();
}

test('the shipped config (disabled, no server) saves and applies: Enable is judged by the checkbox, not its value attribute', async () => {
	rpcd.reset({ configs: { tgtun: fx.shippedConfig() }, objects: {} });
	await openView('tgtun/settings', SETTINGS_READY);
	assert.equal(await page.eval('document.querySelector("[data-name=enabled] input[type=checkbox]").checked'), false);
	await setField('[data-name=fail_mode] select', 'direct');
	const body = await saveApply();
	assert.ok(!body.includes('enabled but no proxy has a server'), 'Save refused the shipped config: ' + body.slice(0, 2000));
	assert.ok(body.includes('Configuration changes applied.'), body.slice(0, 2000));
	assert.equal(rpcd.committed.tgtun.find((x) => x['.name'] === 'main').fail_mode, 'direct');
	assert.equal(rpcd.pending, null, 'the apply was confirmed');
	// Ticking Enable without a server is still refused, in the daemon's words.
	await page.waitFor(SETTINGS_READY + ' && !document.querySelector(".alert-message")', 'the reloaded view');
	await setField('[data-name=enabled] input[type=checkbox]', true);
	await page.waitFor('document.querySelector("[data-name=enabled] .cbi-input-invalid, [data-name=enabled].cbi-value-invalid")', 'Enable marked invalid');
	await click('#view .cbi-page-actions .cbi-button-save');
	await page.waitFor('document.body.innerText.includes("enabled but no proxy has a server")', 'the error');
	assert.equal(rpcd.committed.tgtun.find((x) => x['.name'] === 'main').enabled, '0');
	noPageErrors(/^TypeError: Option "Enable" contains an invalid input value\. enabled but no proxy has a server/);
});

test('Save leaves unticked services alone: no service section appears for them', async () => {
	rpcd.reset({ configs: { tgtun: fx.shippedConfig() }, objects: {} });
	await openView('tgtun/settings', SETTINGS_READY);
	await setField('[data-name=fail_mode] select', 'direct');
	await click('#view .cbi-page-actions .cbi-button-save');
	await page.waitFor(`document.body.innerText.includes('Save error') || document.querySelector('#view .cbi-page-actions .cbi-button-save:not([disabled])')`, 'the save');
	assert.ok(!(await text()).includes('Save error'), (await text('.modal')));
	const changes = rpcd.sessions.size && [...rpcd.sessions.values()].map((s) => s.changes.tgtun || []).flat();
	assert.ok(changes.some((c) => c[0] === 'set' && c[2] === 'fail_mode'), JSON.stringify(changes));
	assert.deepEqual(changes.filter((c) => c[0] === 'add'), [], 'Save added sections');
	assert.deepEqual(changes.filter((c) => c[1] !== 'main'), [], 'Save touched other sections');
	noPageErrors();
});

test('a new proxy cannot take the name of an existing section (rpcd would retype it)', async () => {
	rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: {} });
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
	const main = [...rpcd.sessions.values()].map((s) => (s.delta.tgtun || []).find((x) => x['.name'] === 'main')).find(Boolean) || rpcd.committed.tgtun[0];
	assert.equal(main['.type'], 'main');
	noPageErrors();
});

test('the proxy table shows UDP only for types that carry it', async () => {
	rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: {} });
	await openView('tgtun/settings', SETTINGS_READY);
	const cell = (sid, name) => page.eval(`document.querySelector('tr[data-sid=${sid}] td[data-name=${name}]').innerText.trim()`);
	assert.equal(await cell('office', 'udp'), '-', 'http proxy shows UDP');
	assert.equal(await cell('primary', 'udp'), 'Yes');
	assert.equal(await cell('backup', 'udp'), 'Yes');
	noPageErrors();
});

test('status: daemon not running, through uhttpd (-32000): the hint, no stack trace', async () => {
	rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: {} });
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
	noPageErrors();
});

test('status: no access to tgtun (-32002): the ACL hint', async () => {
	rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: { tgtun: fx.tgtunObject() } });
	rpcd.revoke('luci-app-tgtun');
	try {
		await openView('tgtun/status', STATUS_READY);
		const body = await text('#view');
		assert.ok(body.includes('failed with error -32002: Access denied'), body);
		assert.ok(body.includes('luci-app-tgtun'), 'no access hint: ' + body);
	} finally {
		rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: {} });
	}
	noPageErrors();
});

test('proxy editor: a bad value is refused in the daemon\'s words; Save & Apply of a good edit', async () => {
	rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: {} });
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
	const backup = rpcd.committed.tgtun.find((x) => x['.name'] === 'backup');
	assert.deepEqual([backup.port, backup.cipher, backup.password], ['8443', '2022-blake3-aes-128-gcm', 'AAECAwQFBgcICQoLDA0ODw==']);
	noPageErrors();
});

test('status: diagnostics, list update and reload call the daemon over /ubus', async () => {
	rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: { tgtun: fx.tgtunObject() } });
	await openView('tgtun/status', STATUS_READY);
	await click('button', 'Run diagnostics');
	await page.waitFor('document.querySelector(".modal") && document.querySelector(".modal").innerText.includes("Hint:")', 'the diagnostics');
	const modal = await text('.modal');
	for (const s of ['Diagnostics', 'Something is wrong', "proxy 'office'", 'failed', '407 Proxy Authentication Required',
		'set username and password of this proxy', "proxy 'primary'", 'reached 149.154.167.51:443'])
		assert.ok(modal.includes(s), `diagnostics lack ${s}`);
	await shot('status-diagnostics.png');
	await click('.modal button', 'Close');
	await click('button', 'Update lists now');
	await page.waitFor('document.body.innerText.includes("Some lists could not be updated")', 'the update notification');
	assert.match(await text(), /Some lists could not be updated: mine: GET https:\/\/example.org\/my-list.txt: 404 Not Found/);
	await click('button', 'Reload configuration');
	await page.waitFor('document.body.innerText.includes("The configuration was reloaded.")', 'the reload notification');
	const made = new Set(rpcd.calls.filter((c) => c.object === 'tgtun').map((c) => `${c.object}.${c.method}`));
	assert.deepEqual([...made].sort(), ['tgtun.check', 'tgtun.reload', 'tgtun.status', 'tgtun.update_lists']);
	noPageErrors();
});

test('screenshots: settings and status, English and Russian', async () => {
	for (const lang of ['en', 'ru']) {
		rpcd.reset({ configs: { tgtun: fx.sampleConfig() }, objects: { tgtun: fx.tgtunObject() } });
		rpcd.setLang(lang);
		await openView('tgtun/settings', SETTINGS_READY);
		if (lang === 'ru') assert.ok((await text()).includes('Применить'), 'LuCI\'s own strings are not in Russian');
		await shot(`settings-${lang}.png`);
		await openView('tgtun/status', STATUS_READY);
		await shot(`status-${lang}.png`);
	}
	rpcd.setLang('en');
	noPageErrors();
});
