'use strict';
// The router the browser tests talk to: OpenWrt's real ubusd, rpcd and uhttpd (built by
// ../shared/openwrt/build.sh into $TGTUN_OPENWRT_HOST, default /var/cache/tgtun-openwrt)
// and tgtun's daemon on that bus, run by e2e/lucirouter (see its doc comment). This file
// lays out the router's files in a temporary directory and drives lucirouter:
//
// - etc/config: the router's /etc/config. rpcd: the logins, with crypt()ed passwords —
//   root (every ACL group) and `operator` (every group but luci-app-tgtun); luci: the
//   language and the apply timings; tgtun: what the test writes.
// - acl.d: rpcd's access lists, as a router with luci-base and this app has them: rpcd's
//   own unauthenticated.json (from rpcd's source in ../shared/openwrt/src), LuCI base's
//   (../shared/openwrt/luci-base.json) and the app's root/usr/share/rpcd/acl.d files.
// - rpcd-plugins: rpcd's file plugin.
// - www: uhttpd's document root: LuCI's runtime and the bootstrap theme (../shared/luci),
//   the app's htdocs over them, and cgi-bin/luci, the dispatcher stand-in (dispatcher.js).
// - fixtures.json: the DHCP leases and devices luci-rpc answers (fixtures.js).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { spawn, spawnSync } = require('node:child_process');
const { appDir } = require('./i18n');
const { luciRoot, sharedDir } = require('./luci-runtime');
const uciText = require('./uci-text');

const repo = path.resolve(appDir, '..');
const PASSWORDS = { root: 'secret', operator: 'operator-pw' };

function openwrtPrefix() {
	return path.resolve(process.env.TGTUN_OPENWRT_HOST || '/var/cache/tgtun-openwrt');
}

function goBuild(out, pkg) {
	const go = process.env.GO || 'go';
	const r = spawnSync(go, ['build', '-o', out, pkg], { cwd: repo, encoding: 'utf8', timeout: 600000 });
	if (r.error || r.status !== 0) throw new Error(`cannot build ${pkg} with '${go} build': ${r.error || r.stderr}`);
	return out;
}

function copyTree(src, dst) {
	fs.cpSync(src, dst, { recursive: true, dereference: true, force: true });
}

function crypt(password) {
	const r = spawnSync('openssl', ['passwd', '-6', '-stdin'], { input: password, encoding: 'utf8' });
	if (r.error || r.status !== 0) throw new Error(`openssl passwd: ${r.error || r.stderr}`);
	return r.stdout.trim();
}

const luciConfig = (lang, rollback = 90) => `config core 'main'
	option lang '${lang}'

config internal 'apply'
	option rollback '${rollback}'
	option holdoff '1'
	option timeout '5'
	option display '1'
`;

class Router {
	// Lays the router out and starts it. opts.fixtures: what luci-rpc answers.
	static async start({ fixtures, tgtunBin, config } = {}) {
		const r = new Router();
		r.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tgtun-luci-router-'));
		r.prefix = openwrtPrefix();
		const w = (p) => path.join(r.dir, p);
		try {
			r.layout(fixtures || {}, config || '');
			// run.sh builds both once for every test file; alone, a test builds its own.
			r.tgtun = tgtunBin || process.env.TGTUN_TEST_BIN || goBuild(w('bin/tgtun'), './daemon');
			const bin = process.env.LUCIROUTER_BIN || goBuild(w('bin/lucirouter'), './e2e/lucirouter');
			await r.spawn(bin);
		} catch (e) {
			await r.stop();
			throw e;
		}
		return r;
	}

	layout(fixtures, config) {
		const w = (p) => path.join(this.dir, p);
		for (const d of ['etc/config', 'acl.d', 'rpcd-plugins', 'www/luci-static', 'www/cgi-bin', 'state', 'uci-empty', 'bin'])
			fs.mkdirSync(w(d), { recursive: true });
		const luci = luciRoot();
		const openwrt = sharedDir('openwrt', 'luci-base.json');

		// uhttpd serves only what is inside its document root (it resolves links): copies.
		copyTree(path.join(luci, 'modules/luci-base/htdocs/luci-static'), w('www/luci-static'));
		copyTree(path.join(luci, 'themes/luci-theme-bootstrap/htdocs/luci-static'), w('www/luci-static'));
		copyTree(path.join(appDir, 'htdocs/luci-static'), w('www/luci-static'));
		fs.writeFileSync(w('dispatcher.json'), JSON.stringify({
			ubus: { cli: path.join(this.prefix, 'bin/ubus'), socket: w('run/ubus.sock'), libdir: path.join(this.prefix, 'lib') },
			configDir: w('etc/config'), stateDir: w('state'), appDir, luciRoot: luci,
		}));
		fs.writeFileSync(w('www/cgi-bin/luci'), `#!${process.execPath}\nrequire(${JSON.stringify(path.join(__dirname, 'dispatcher.js'))}).main(${JSON.stringify(w('dispatcher.json'))});\n`, { mode: 0o755 });

		// rpcd's access lists as a router with luci-base and luci-app-tgtun has them.
		const tar = spawnSync('tar', ['-xzf', path.join(openwrt, 'src/rpcd.tar.gz'), '-O', 'rpcd/unauthenticated.json'], { encoding: 'utf8' });
		if (tar.status !== 0) throw new Error(`rpcd's unauthenticated.json from ${openwrt}/src/rpcd.tar.gz: ${tar.stderr}`);
		fs.writeFileSync(w('acl.d/unauthenticated.json'), tar.stdout);
		fs.copyFileSync(path.join(openwrt, 'luci-base.json'), w('acl.d/luci-base.json'));
		const appAcl = path.join(appDir, 'root/usr/share/rpcd/acl.d');
		for (const f of fs.readdirSync(appAcl)) fs.copyFileSync(path.join(appAcl, f), w(`acl.d/${f}`));
		fs.copyFileSync(path.join(this.prefix, 'lib/rpcd/file.so'), w('rpcd-plugins/file.so'));

		fs.writeFileSync(w('etc/config/rpcd'), `config rpcd
	option socket '${w('run/ubus.sock')}'
	option timeout '30'

config login
	option username 'root'
	option password '${crypt(PASSWORDS.root)}'
	list read '*'
	list write '*'

config login
	option username 'operator'
	option password '${crypt(PASSWORDS.operator)}'
	list read '*'
	list read '!luci-app-tgtun'
	list write '*'
	list write '!luci-app-tgtun'
`);
		fs.writeFileSync(w('etc/config/luci'), luciConfig('en'));
		fs.writeFileSync(w('etc/config/tgtun'), config);
		fs.writeFileSync(w('fixtures.json'), JSON.stringify(Object.assign({
			features: { firewall4: true, dnsmasq: true, ipv6: true },
			version: { branch: 'LuCI test', revision: 'test' },
			board: { model: { id: 'test', name: 'Test router' }, network: {} },
		}, fixtures)));
	}

	spawn(bin) {
		this.stderr = '';
		this.proc = spawn(bin, ['-root', this.dir, '-openwrt', this.prefix, '-tgtun', this.tgtun], { stdio: ['pipe', 'pipe', 'pipe'] });
		this.proc.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-20000); });
		this.exited = new Promise((resolve) => this.proc.on('exit', (code, sig) => resolve(code != null ? code : sig)));
		this.pending = new Map();
		this.nextId = 1;
		const lines = readline.createInterface({ input: this.proc.stdout });
		return new Promise((resolve, reject) => {
			const timer = setTimeout(() => reject(new Error(`lucirouter did not start within 4 minutes:\n${this.stderr}`)), 240000);
			this.exited.then((code) => {
				clearTimeout(timer);
				reject(new Error(`lucirouter exited (${code}):\n${this.stderr}`));
				for (const p of this.pending.values()) p.reject(new Error(`lucirouter exited (${code}):\n${this.stderr.slice(-4000)}`));
				this.pending.clear();
			});
			lines.on('line', (line) => {
				const msg = JSON.parse(line);
				if (!this.ready) {
					clearTimeout(timer);
					this.ready = msg;
					this.base = msg.url;
					resolve();
					return;
				}
				const p = this.pending.get(msg.id);
				if (!p) return;
				this.pending.delete(msg.id);
				if (msg.error) p.reject(new Error(`lucirouter ${p.op}: ${msg.error}`)); else p.resolve(msg.result);
			});
		});
	}

	cmd(op, extra = {}) {
		const id = this.nextId++;
		return new Promise((resolve, reject) => {
			this.pending.set(id, { op, resolve, reject });
			this.proc.stdin.write(JSON.stringify(Object.assign({ id, op }, extra)) + '\n');
		});
	}

	url(view) { return `${this.base}/cgi-bin/luci/admin/services/${view}`; }

	password(user) { return PASSWORDS[user]; }

	// The tgtun object on the bus: 'real' (the daemon on /etc/config/tgtun), 'none', or
	// { status, check, ... }: a fake daemon answering each method so.
	async daemon(mode) {
		if (typeof mode === 'object') {
			await this.cmd('daemon', { mode: 'fake', answers: mode });
			this.mode = 'fake';
			return;
		}
		await this.cmd('daemon', { mode });
		this.mode = mode;
	}

	// A call on the bus as root: { status, data }.
	call(object, method, args = {}) { return this.cmd('call', { object, method, args }); }

	// What procd's service object and a fake tgtun received since the last time.
	events() { return this.cmd('events'); }

	// A subscription provider's panel on the test network's internet host, which the
	// daemon fetches from: sets the answer of each path given ({ status, reason, body,
	// headers }); { url, requests: { path: count } }.
	panel(answers = {}) { return this.cmd('panel', { answers }); }

	configPath(name) { return path.join(this.dir, 'etc/config', name); }

	writeConfig(name, text) { fs.writeFileSync(this.configPath(name), text); }

	configText(name) { return fs.readFileSync(this.configPath(name), 'utf8'); }

	// The committed /etc/config/NAME as sections, read by the real uci(1).
	committed(name) {
		const r = spawnSync(path.join(this.prefix, 'bin/uci'), ['-c', path.join(this.dir, 'etc/config'), '-P', path.join(this.dir, 'uci-empty'), 'export', name],
			{ encoding: 'utf8', env: { LD_LIBRARY_PATH: path.join(this.prefix, 'lib') } });
		if (r.error || r.status !== 0) throw new Error(`uci export ${name}: ${r.error || r.stderr}`);
		return uciText.parse(r.stdout.replace(/^package .*$/m, ''));
	}

	// rpcd's access list files (read at each login).
	aclText(file) { return fs.readFileSync(path.join(this.dir, 'acl.d', file), 'utf8'); }

	writeAcl(file, text) { fs.writeFileSync(path.join(this.dir, 'acl.d', file), text); }

	setLang(lang) { this.writeConfig('luci', luciConfig(lang)); }

	// A shorter rollback window (LuCI's is 90 s at least): for the rollback test.
	setRollback(seconds) { this.writeConfig('luci', luciConfig('en', seconds)); }

	// While blocked, LuCI's confirm after an apply does not reach the router.
	blockConfirm(on) {
		const f = path.join(this.dir, 'state/block-confirm');
		if (on) fs.writeFileSync(f, ''); else fs.rmSync(f, { force: true });
	}

	logs() {
		const dir = path.join(this.dir, 'logs');
		let out = `lucirouter:\n${this.stderr.slice(-3000)}\n`;
		if (fs.existsSync(dir)) for (const f of fs.readdirSync(dir)) out += `${f}:\n${fs.readFileSync(path.join(dir, f), 'utf8').slice(-2000)}\n`;
		return out;
	}

	async stop() {
		if (this.proc && this.proc.exitCode == null) {
			this.proc.stdin.end();
			const killer = setTimeout(() => this.proc.kill('SIGTERM'), 60000);
			await this.exited;
			clearTimeout(killer);
		}
		if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
	}
}

module.exports = { Router, openwrtPrefix };
