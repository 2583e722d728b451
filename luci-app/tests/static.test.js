'use strict';
// Static checks of luci-app-tgtun: the views compile, the JSON files parse, the rpcd ACL
// grants exactly what the views call, and every marked string is in the template and
// translated into Russian.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { spawnSync } = require('node:child_process');
const i18n = require('./lib/i18n');

const app = i18n.appDir;
const read = (rel) => fs.readFileSync(path.join(app, rel), 'utf8');
const aclFile = 'root/usr/share/rpcd/acl.d/luci-app-tgtun.json';
const menuFile = 'root/usr/share/luci/menu.d/luci-app-tgtun.json';

function walk(dir, out = []) {
	for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
		if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
		const p = path.join(dir, e.name);
		if (e.isDirectory()) walk(p, out); else out.push(p);
	}
	return out;
}

// The ubus object/method pairs a source declares with rpc.declare.
function declaredCalls(src) {
	const out = [];
	for (const m of src.matchAll(/rpc\.declare\(\s*\{([^}]*)\}/g)) {
		const obj = /object:\s*'([^']+)'/.exec(m[1]);
		const meth = /method:\s*'([^']+)'/.exec(m[1]);
		assert.ok(obj && meth, `rpc.declare without a literal object and method: ${m[0]}`);
		out.push(`${obj[1]}.${meth[1]}`);
	}
	return out;
}

test('the views exist and compile as LuCI compiles them (as a function body)', () => {
	const files = i18n.viewFiles().map((f) => path.basename(f));
	assert.deepEqual(files, ['settings.js', 'status.js']);
	for (const file of i18n.viewFiles()) {
		const src = fs.readFileSync(file, 'utf8');
		assert.match(src, /^'use strict';\n'require view';/, `${file}: LuCI module header`);
		assert.match(src, /\nreturn view\.extend\(\{/, `${file}: returns a view`);
		assert.doesNotThrow(() => new vm.Script(`(function() {\n${src}\n})`, { filename: file }), `${file} does not parse`);
		// A syntax error must be caught by this check: prove it on a broken copy.
		assert.throws(() => new vm.Script(`(function() {\n${src.replace('return view.extend({', 'return view.extend({{')}\n})`), SyntaxError);
	}
});

test('every JSON file parses', () => {
	const files = walk(app).filter((f) => f.endsWith('.json'));
	assert.ok(files.length >= 2, 'the menu and the ACL are JSON files');
	for (const f of files) assert.doesNotThrow(() => JSON.parse(fs.readFileSync(f, 'utf8')), f);
});

test('the ACL grants exactly the ubus methods the views call, status and DHCP leases read-only, the rest write', () => {
	const acl = JSON.parse(read(aclFile));
	assert.deepEqual(Object.keys(acl), ['luci-app-tgtun']);
	const grant = acl['luci-app-tgtun'];
	const flat = (part) => Object.entries(grant[part].ubus || {}).flatMap(([o, ms]) => ms.map((m) => `${o}.${m}`)).sort();

	const called = [...new Set(i18n.viewFiles().flatMap((f) => declaredCalls(fs.readFileSync(f, 'utf8'))))].sort();
	assert.deepEqual(called, ['luci-rpc.getDHCPLeases', 'tgtun.check', 'tgtun.reload', 'tgtun.status', 'tgtun.update_lists', 'tgtun.update_subscriptions']);
	assert.deepEqual(flat('read'), ['luci-rpc.getDHCPLeases', 'tgtun.status']);
	assert.deepEqual(flat('write'), ['tgtun.check', 'tgtun.reload', 'tgtun.update_lists', 'tgtun.update_subscriptions']);
	assert.deepEqual([...flat('read'), ...flat('write')].sort(), called);
	assert.deepEqual(Object.keys(grant.read).sort(), ['ubus', 'uci']);
	assert.deepEqual(Object.keys(grant.write).sort(), ['ubus', 'uci']);
});

test('the ACL grants exactly the uci config the views use', () => {
	const grant = JSON.parse(read(aclFile))['luci-app-tgtun'];
	const used = new Set();
	for (const f of i18n.viewFiles()) {
		const src = fs.readFileSync(f, 'utf8');
		for (const m of src.matchAll(/(?:uci\.\w+|form\.Map)\(\s*'([^']+)'/g)) used.add(m[1]);
		assert.doesNotMatch(src, /(?:uci\.\w+|form\.Map)\(\s*[^'\s)]/, `${f}: uci config names must be literals`);
	}
	assert.deepEqual([...used], ['tgtun']);
	assert.deepEqual(grant.read.uci, ['tgtun']);
	assert.deepEqual(grant.write.uci, ['tgtun']);
});

test('the menu puts Settings and Status under Services → tgtun, behind the ACL', () => {
	const menu = JSON.parse(read(menuFile));
	assert.deepEqual(Object.keys(menu), ['admin/services/tgtun', 'admin/services/tgtun/settings', 'admin/services/tgtun/status']);
	assert.deepEqual(menu['admin/services/tgtun'].depends.acl, ['luci-app-tgtun']);
	for (const [node, view] of [['settings', 'tgtun/settings'], ['status', 'tgtun/status']]) {
		const action = menu[`admin/services/tgtun/${node}`].action;
		assert.deepEqual(action, { type: 'view', path: view });
		assert.ok(fs.existsSync(path.join(app, 'htdocs/luci-static/resources/view', `${view}.js`)), view);
	}
	assert.equal(menu['admin/services/tgtun'].action.path, 'admin/services/tgtun/settings');
});

test('the package Makefile uses luci.mk with the right title, dependency and licence', () => {
	const mk = read('Makefile');
	assert.match(mk, /^LUCI_TITLE:=\S/m);
	assert.match(mk, /^LUCI_DEPENDS:=\+tgtun$/m);
	assert.match(mk, /^PKG_LICENSE:=Apache-2\.0$/m);
	assert.match(mk, /^include \.\.\/\.\.\/luci\.mk$/m);
});

test('every _() call has one literal string', () => {
	for (const f of i18n.viewFiles()) {
		const src = fs.readFileSync(f, 'utf8');
		const calls = [...src.matchAll(/(?<![\w$.])_\(/g)].length;
		const found = i18n.extractCalls(src);
		assert.equal(found.length, calls, `${f}: a _() argument is not a plain string literal`);
		for (const c of found) assert.ok(c.literal, `${f}:${c.line}: _() must take exactly one literal`);
	}
});

test('the template holds exactly the marked strings', () => {
	const marked = [...i18n.collect().keys()].sort();
	const pot = i18n.parsePo(read('po/templates/tgtun.pot')).entries.map((e) => e.msgid).sort();
	assert.ok(marked.length > 100, `found ${marked.length} strings`);
	assert.deepEqual(pot, marked, 'po/templates/tgtun.pot is stale: run node luci-app/tests/update-pot.js');
});

test('Russian translates every string, keeping its format directives', () => {
	const marked = [...i18n.collect().keys()];
	const entries = new Map(i18n.parsePo(read('po/ru/tgtun.po')).entries.map((e) => [e.msgid, e]));
	for (const id of marked) {
		const e = entries.get(id);
		assert.ok(e, `missing in po/ru/tgtun.po: ${JSON.stringify(id)}`);
		assert.ok(!e.fuzzy, `fuzzy in po/ru/tgtun.po: ${JSON.stringify(id)}`);
		assert.ok(e.msgstr.trim() !== '', `untranslated in po/ru/tgtun.po: ${JSON.stringify(id)}`);
		assert.deepEqual(i18n.directives(e.msgstr), i18n.directives(id), `format directives differ: ${JSON.stringify(id)}`);
	}
	for (const id of entries.keys()) assert.ok(marked.includes(id), `obsolete in po/ru/tgtun.po: ${JSON.stringify(id)}`);
});

test('msgfmt --check accepts the Russian catalogue, all translated, without warnings', () => {
	const r = spawnSync('msgfmt', ['--check', '--statistics', '-o', '/dev/null', path.join(app, 'po/ru/tgtun.po')], { encoding: 'utf8' });
	assert.equal(r.error, undefined, `msgfmt: ${r.error}`);
	assert.equal(r.status, 0, r.stderr);
	const n = i18n.collect().size;
	assert.equal(r.stderr.trim(), `${n} translated messages.`);
});
