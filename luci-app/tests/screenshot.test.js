'use strict';
// Renders both views in headless Chromium against the LuCI stand-in
// (harness/luci-stub.js: it stands in for LuCI's runtime, the views are the real files)
// with sample data, drives them as a user would, and saves screenshots to
// e2e/artifacts/luci/ of the repository. Each screenshot must exist and not be blank.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { appDir } = require('./lib/i18n');
const { Browser } = require('./lib/cdp');
const { inkStats } = require('./lib/png');
const server = require('./lib/server');

const artifacts = path.resolve(appDir, '..', 'e2e', 'artifacts', 'luci');
const W = 1280, H = 1600;
let browser, web, page;

test.before(async () => {
	fs.mkdirSync(artifacts, { recursive: true });
	web = await server.start();
	browser = await Browser.launch();
	page = await browser.newPage(W, H);
});

test.after(async () => {
	if (browser) await browser.close();
	if (web) web.server.close();
});

const text = (sel = 'body') => page.eval(`document.querySelector(${JSON.stringify(sel)}).innerText`);
const calls = () => page.eval('(window.STUB_CALLS || []).map(c => c.object + "." + c.method)');

async function shot(name) {
	const file = path.join(artifacts, name);
	fs.rmSync(file, { force: true });
	await page.screenshot(file, W, H);
	const size = fs.statSync(file).size;
	const st = inkStats(file);
	assert.ok(size > 20000, `${name}: only ${size} bytes`);
	assert.ok(st.width === W && st.height >= H, `${name}: ${st.width}x${st.height}`);
	assert.ok(st.inkRatio > 0.01, `${name}: nearly blank (${(st.inkRatio * 100).toFixed(1)}% non-white)`);
	assert.ok(st.colours > 20, `${name}: only ${st.colours} colours`);
	return file;
}

function noPageErrors() {
	const errs = browser.events.filter((e) => e.method === 'Runtime.exceptionThrown');
	assert.deepEqual(errs.map((e) => e.params.exceptionDetails.exception?.description || e.params.exceptionDetails.text), []);
}

test('settings: general tab, proxies grid, custom lists', async () => {
	await page.goto(`${web.base}?view=tgtun/settings`);
	const body = await text();
	for (const s of ['General settings', 'LAN interfaces', 'br-lan', 'br-guest', 'Proxies', 'proxy.example.org', 'chacha20-ietf-poly1305',
		'HTTP CONNECT', 'Custom subnets and lists', '203.0.113.0/24', 'https://example.org/my-list.txt', 'Save & Apply'])
		assert.ok(body.includes(s), `settings page lacks ${s}`);
	assert.equal(await page.eval('document.querySelectorAll("tr.cbi-section-table-row").length'), 3, 'three proxies');
	assert.ok(!body.includes('secret'), 'a password is shown in the grid');
	// Cells follow the options' dependencies: no cipher for SOCKS5, no UDP for HTTP.
	const cell = (sid, name) => page.eval(`document.querySelector('tr[data-sid=${sid}] td[data-name=${name}]').innerText`);
	assert.deepEqual([await cell('primary', 'server'), await cell('primary', 'port'), await cell('primary', 'username')], ['198.51.100.6', '1080', 'alice']);
	assert.equal(await cell('primary', 'cipher'), '-');
	assert.equal(await cell('office', 'udp'), '-');
	assert.equal(await cell('backup', 'cipher'), 'chacha20-ietf-poly1305');
	// The sample configuration is valid: no field is marked.
	await page.waitFor('document.querySelectorAll(".cbi-value").length > 0', 'rows');
	assert.equal(await page.eval('document.querySelectorAll(".cbi-value-invalid").length'), 0);
	await shot('settings.png');
	noPageErrors();
});

test('settings: services tab reflects the service sections', async () => {
	await page.goto(`${web.base}?view=tgtun/settings&tab=services`);
	const state = await page.eval(`Object.fromEntries([...document.querySelectorAll('[data-tab=services] .cbi-value[data-name^=_service_]')]
		.map(r => [r.dataset.name.slice(9), r.querySelector('input').checked]))`);
	assert.deepEqual(state, { telegram: true, whatsapp: false });
	// Ticking WhatsApp and saving creates its service section, enabled.
	await page.eval(`(() => { const i = document.querySelector('[data-name=_service_whatsapp] input'); i.checked = true;
		i.dispatchEvent(new Event('change', { bubbles: true })); return true })()`);
	assert.equal(await page.eval('LuCIStub.uci.get("tgtun", "whatsapp")'), null, 'no section before saving');
	await page.eval(`(() => { document.querySelector('.cbi-button-apply').click(); return true })()`);
	await page.waitFor('LuCIStub.uci.get("tgtun", "whatsapp", "enabled") === "1"', 'the whatsapp section');
	assert.equal(await page.eval('LuCIStub.uci.get("tgtun", "whatsapp")[".type"]'), 'service');
	await shot('settings-services.png');
	noPageErrors();
});

test('settings: advanced tab in Russian', async () => {
	await page.goto(`${web.base}?view=tgtun/settings&tab=advanced&lang=ru`);
	const body = await text();
	for (const s of ['Дополнительно', 'Метка (fwmark)', 'Таблица маршрутизации', 'Интервал обновления списков', 'Прокси', 'Настройки'])
		assert.ok(body.includes(s), `Russian settings lack ${s}`);
	await shot('settings-advanced-ru.png');
	noPageErrors();
});

test('settings: a bad value is refused in the daemon\'s words', async () => {
	await page.goto(`${web.base}?view=tgtun/settings`);
	await page.eval(`(() => { document.querySelector('tr[data-sid=backup] .cbi-button-edit').click(); return true })()`);
	await page.waitFor('document.body.classList.contains("modal-overlay-active")', 'the proxy editor');
	await page.eval(`(() => {
		const set = (name, v) => { const row = document.querySelector('.modal [data-name=' + name + ']');
			const el = row.querySelector('input, select'); el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); };
		set('port', '70000'); set('cipher', '2022-blake3-aes-128-gcm'); return true })()`);
	await page.waitFor('document.querySelectorAll(".modal .cbi-value-invalid").length >= 2', 'the errors');
	const modal = await text('.modal');
	assert.ok(modal.includes("port '70000' is out of range 1-65535"), modal);
	assert.ok(modal.includes('password is not a base64 key of 16 bytes, as 2022-blake3-aes-128-gcm needs'), modal);
	// Username is hidden for Shadowsocks; UDP shown; the password is a password field.
	assert.equal(await page.eval('getComputedStyle(document.querySelector(".modal [data-name=username]")).display'), 'none');
	assert.equal(await page.eval('document.querySelector(".modal [data-name=password] input").type'), 'password');
	await shot('settings-proxy-invalid.png');
	// Saving is refused while a field is invalid.
	await page.eval(`(() => { [...document.querySelectorAll('.modal button')].find(b => b.textContent == 'Save').click(); return true })()`);
	assert.equal(await page.eval('document.body.classList.contains("modal-overlay-active")'), true);
	assert.equal(await page.eval('LuCIStub.uci.get("tgtun", "backup", "port")'), '8388');
	noPageErrors();
});

test('status: running daemon with proxies, lists and traffic', async () => {
	await page.goto(`${web.base}?view=tgtun/status`);
	const body = await text();
	for (const s of ['Running', '0.3.0', '26h3m12s', 'in use', '12 ms', '48 ms', 'unhealthy', '407 Proxy Authentication Required',
		'telegram', '9 IPv4, 5 IPv6', 'downloaded', 'built-in copy', '404 Not Found', '3 TCP, 1 UDP', '11.8 MiB / 647.5 MiB',
		'traffic is blocked', 'has no effect on an http proxy', 'Update lists now', 'Run diagnostics'])
		assert.ok(body.includes(s), `status page lacks ${s}`);
	assert.ok(!body.includes('Save & Apply'), 'the status page has no save buttons');
	// The active proxy is marked on its own row.
	assert.equal(await page.eval(`[...document.querySelectorAll('tr')].find(r => r.innerText.includes('in use')).cells[0].innerText.trim().split(/\\s/)[0]`), 'primary');
	await shot('status.png');
	noPageErrors();
});

test('status: diagnostics, list update and reload call the daemon', async () => {
	await page.goto(`${web.base}?view=tgtun/status`);
	await page.eval(`(() => { [...document.querySelectorAll('button')].find(b => b.textContent == 'Run diagnostics').click(); return true })()`);
	await page.waitFor('document.querySelector(".modal") && document.querySelector(".modal").innerText.includes("Hint:")', 'the diagnostics');
	const modal = await text('.modal');
	for (const s of ['Diagnostics', 'Something is wrong', "proxy 'office'", 'failed', '407 Proxy Authentication Required',
		'set username and password of this proxy', "proxy 'primary'", 'reached 149.154.167.51:443'])
		assert.ok(modal.includes(s), `diagnostics lack ${s}`);
	await shot('status-diagnostics.png');
	await page.eval(`(() => { [...document.querySelectorAll('.modal button')].find(b => b.textContent == 'Close').click(); return true })()`);
	await page.eval(`(() => { [...document.querySelectorAll('button')].find(b => b.textContent == 'Update lists now').click(); return true })()`);
	await page.waitFor('document.querySelector(".alert-message")', 'the update notification');
	assert.match(await text('.alert-message'), /Some lists could not be updated: mine: GET https:\/\/example.org\/my-list.txt: 404 Not Found/);
	await page.eval(`(() => { [...document.querySelectorAll('button')].find(b => b.textContent == 'Reload configuration').click(); return true })()`);
	await page.waitFor('document.body.innerText.includes("The configuration was reloaded.")', 'the reload notification');
	const made = new Set(await calls());
	assert.deepEqual([...made].sort(), ['tgtun.check', 'tgtun.reload', 'tgtun.status', 'tgtun.update_lists']);
	noPageErrors();
});

test('status: the daemon is not running (Russian)', async () => {
	await page.goto(`${web.base}?view=tgtun/status&scenario=stopped&lang=ru`);
	const body = await text();
	for (const s of ['Состояние tgtun', 'Не запущена', 'RPC call to tgtun/status failed with ubus code 4: Resource not found',
		'/etc/init.d/tgtun start', 'Обновить списки'])
		assert.ok(body.includes(s), `stopped page lacks ${s}`);
	await shot('status-stopped-ru.png');
	noPageErrors();
});
