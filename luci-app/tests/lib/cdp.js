'use strict';
// Drives headless Chromium over --remote-debugging-pipe (the DevTools protocol as
// NUL-terminated JSON on fds 3 and 4): no ports, no npm packages.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

class Browser {
	static async launch() {
		if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
		const b = new Browser();
		b.profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tgtun-luci-chromium-'));
		b.proc = spawn(CHROMIUM, [
			'--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
			'--disable-background-networking', '--disable-component-update', '--disable-sync',
			'--disable-dev-shm-usage', '--no-proxy-server', '--hide-scrollbars', '--lang=en-US',
			`--user-data-dir=${b.profile}`, '--remote-debugging-pipe', 'about:blank',
		], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
		b.stderr = '';
		b.proc.stderr.on('data', (d) => { b.stderr = (b.stderr + d).slice(-4000); });
		b.out = b.proc.stdio[3];
		b.nextId = 1;
		b.pending = new Map();
		b.events = [];
		let buf = Buffer.alloc(0);
		b.proc.stdio[4].on('data', (chunk) => {
			buf = Buffer.concat([buf, chunk]);
			let nul;
			while ((nul = buf.indexOf(0)) >= 0) {
				const msg = JSON.parse(buf.subarray(0, nul).toString('utf8'));
				buf = buf.subarray(nul + 1);
				b.dispatch(msg);
			}
		});
		b.exited = new Promise((resolve) => b.proc.on('exit', resolve));
		b.proc.on('exit', (code) => {
			for (const p of b.pending.values()) p.reject(new Error(`chromium exited (${code}): ${b.stderr}`));
			b.pending.clear();
		});
		await b.send('Browser.getVersion');
		return b;
	}

	dispatch(msg) {
		if (msg.id && this.pending.has(msg.id)) {
			const p = this.pending.get(msg.id);
			this.pending.delete(msg.id);
			if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`)); else p.resolve(msg.result);
		} else if (msg.method) {
			this.events.push(msg);
		}
	}

	send(method, params = {}, sessionId, timeoutMs = 30000) {
		const id = this.nextId++;
		const msg = { id, method, params };
		if (sessionId) msg.sessionId = sessionId;
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => { this.pending.delete(id); reject(new Error(`${method}: no answer in ${timeoutMs} ms`)); }, timeoutMs);
			this.pending.set(id, {
				method,
				resolve: (v) => { clearTimeout(timer); resolve(v); },
				reject: (e) => { clearTimeout(timer); reject(e); },
			});
			this.out.write(JSON.stringify(msg) + '\0');
		});
	}

	async newPage(width, height) {
		const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
		const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
		const page = new Page(this, sessionId, targetId);
		await page.send('Page.enable');
		await page.send('Runtime.enable');
		await page.send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false });
		return page;
	}

	async close() {
		try { await this.send('Browser.close', {}, undefined, 5000); } catch { /* it may be gone already */ }
		const killer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
		await this.exited;
		clearTimeout(killer);
		fs.rmSync(this.profile, { recursive: true, force: true });
	}
}

class Page {
	constructor(browser, sessionId, targetId) {
		Object.assign(this, { browser, sessionId, targetId });
	}

	send(method, params) { return this.browser.send(method, params, this.sessionId); }

	// Evaluates an expression (awaiting a promise) and returns its value; page errors throw.
	async eval(expression) {
		const r = await this.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
		if (r.exceptionDetails) throw new Error(`in page: ${r.exceptionDetails.exception ? r.exceptionDetails.exception.description : r.exceptionDetails.text}`);
		return r.result.value;
	}

	// Polls until the expression is truthy; bounded. An evaluation that fails (the page is
	// navigating, so the context is gone) counts as not yet.
	async waitFor(expression, what, timeoutMs = 20000) {
		const end = Date.now() + timeoutMs;
		let last = null;
		for (;;) {
			let v = null;
			try { v = await this.eval(expression); last = null; } catch (e) { last = e; }
			if (v) return v;
			if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? ` (${last.message})` : ''}`);
			await new Promise((r) => setTimeout(r, 100));
		}
	}

	// Navigates and waits until `ready` (an expression) is truthy, or LuCI showed an error.
	async open(url, ready, what) {
		await this.send('Page.navigate', { url });
		const done = `(${ready}) || document.querySelector('#view .alert-message.error, #maincontent > .alert-message.error')`;
		await this.waitFor(done, what || url);
		const err = await this.eval(`(() => { const e = document.querySelector('#view .alert-message.error, #maincontent > .alert-message.error'); return e ? e.innerText : null })()`);
		if (err) throw new Error(`the view failed: ${err}`);
	}

	async goto(url) {
		await this.send('Page.navigate', { url });
		await this.waitFor('window.__rendered === true || window.__error != null', `the view at ${url}`);
		const err = await this.eval('window.__error || null');
		if (err) throw new Error(`the view failed: ${err}`);
	}

	// Records every JSON-RPC call the page makes to /ubus and its answer (the object, the
	// method, the JSON-RPC error code or the ubus status; tgtun's data too), in every
	// document the page loads from now on: see ubusCalls().
	async recordUbus() {
		await this.send('Page.addScriptToEvaluateOnNewDocument', { source: `(() => {
			const open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
			XMLHttpRequest.prototype.open = function(method, url) { this.__tgtunURL = String(url); return open.apply(this, arguments); };
			XMLHttpRequest.prototype.send = function(body) {
				if (/\\/ubus(\\/|\\?|$)/.test(this.__tgtunURL || '') && typeof body == 'string') {
					this.addEventListener('loadend', () => {
						let req, res;
						try { req = JSON.parse(body); } catch (e) { return; }
						try { res = JSON.parse(this.responseText); } catch (e) { res = null; }
						const reqs = [].concat(req), ress = [].concat(res);
						reqs.forEach((q, i) => {
							const r = ress.find((x) => x && q && x.id === q.id) || ress[i] || {};
							const p = (q && q.params) || [];
							console.debug('tgtun-test:ubus', JSON.stringify({ object: q.method == 'call' ? p[1] : null, method: q.method == 'call' ? p[2] : q.method,
								error: r.error ? r.error.code : null, status: Array.isArray(r.result) ? r.result[0] : null, http: this.status,
								data: p[1] == 'tgtun' && Array.isArray(r.result) ? r.result[1] : undefined }));
						});
					});
				}
				return send.apply(this, arguments);
			};
		})();` });
	}

	// The /ubus calls recorded since the last clearUbusCalls().
	ubusCalls() {
		return this.browser.events.filter((e) => e.method === 'Runtime.consoleAPICalled' && e.sessionId === this.sessionId
			&& e.params.args[0] && e.params.args[0].value === 'tgtun-test:ubus').map((e) => JSON.parse(e.params.args[1].value));
	}

	clearUbusCalls() {
		const keep = this.browser.events.filter((e) => !(e.method === 'Runtime.consoleAPICalled' && e.sessionId === this.sessionId));
		this.browser.events.length = 0;
		this.browser.events.push(...keep);
	}

	// Forgets the login: the next page is the login form, and a new rpcd session.
	async logout() {
		await this.send('Network.clearBrowserCookies');
	}

	// A PNG of the whole page (at least width×minHeight), written to file.
	async screenshot(file, width, minHeight) {
		const h = await this.eval('Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)');
		const height = Math.min(Math.max(h, minHeight), 6000);
		await this.send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false });
		await new Promise((r) => setTimeout(r, 200));
		const { data } = await this.send('Page.captureScreenshot', { format: 'png' });
		fs.writeFileSync(file, Buffer.from(data, 'base64'));
		await this.send('Emulation.setDeviceMetricsOverride', { width, height: minHeight, deviceScaleFactor: 1, mobile: false });
	}
}

module.exports = { Browser };
