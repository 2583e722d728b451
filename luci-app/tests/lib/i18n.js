'use strict';
// Translation helpers for the tests and for update-pot.js: which strings the views and
// the menu mark for translation, and what a .po file says.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const appDir = path.resolve(__dirname, '..', '..');
const viewDir = path.join(appDir, 'htdocs/luci-static/resources/view/tgtun');
const menuFile = path.join(appDir, 'root/usr/share/luci/menu.d/luci-app-tgtun.json');

function viewFiles() {
	return fs.readdirSync(viewDir).filter((f) => f.endsWith('.js')).sort().map((f) => path.join(viewDir, f));
}

// Every _('…') / _("…") in a source, with its line; the argument must be one literal.
function extractCalls(src) {
	const out = [];
	const re = /(?<![\w$.])_\(\s*('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")\s*([,)])?/g;
	let m;
	while ((m = re.exec(src)) !== null) {
		const line = src.slice(0, m.index).split('\n').length;
		out.push({ msgid: vm.runInNewContext(m[1]), line, literal: m[2] !== undefined });
	}
	return out;
}

// All msgids of the app, in first-seen order, with where they come from.
function collect() {
	const seen = new Map();
	const add = (msgid, ref) => {
		if (!seen.has(msgid)) seen.set(msgid, []);
		seen.get(msgid).push(ref);
	};
	for (const file of viewFiles()) {
		const rel = path.relative(appDir, file);
		for (const c of extractCalls(fs.readFileSync(file, 'utf8'))) add(c.msgid, `${rel}:${c.line}`);
	}
	const menu = JSON.parse(fs.readFileSync(menuFile, 'utf8'));
	for (const [node, entry] of Object.entries(menu)) {
		if (entry.title) add(entry.title, `root/usr/share/luci/menu.d/luci-app-tgtun.json:${node}`);
	}
	return seen;
}

function poQuote(s) {
	return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\t/g, '\\t') + '"';
}

function poUnquote(s) {
	return JSON.parse(s.replace(/\\t/g, '\\t'));
}

// Parses a .po/.pot file into { header, entries: [{ msgid, msgstr, fuzzy }] }.
function parsePo(text) {
	const entries = [];
	let cur = null, field = null, fuzzy = false;
	const flush = () => {
		if (cur) entries.push(cur);
		cur = null; field = null; fuzzy = false;
	};
	for (const raw of text.split('\n')) {
		const line = raw.trim();
		if (line === '') { flush(); continue; }
		if (line.startsWith('#,')) { if (line.includes('fuzzy')) fuzzy = true; continue; }
		if (line.startsWith('#')) continue;
		let m;
		if ((m = /^(msgctxt|msgid|msgid_plural|msgstr(?:\[\d+\])?)\s+(".*")$/.exec(line))) {
			if (m[1] === 'msgid' && cur && cur.msgstr !== undefined) flush();
			if (!cur) cur = { fuzzy };
			field = m[1].startsWith('msgstr') ? 'msgstr' : m[1];
			cur[field] = (field === 'msgstr' && cur.msgstr !== undefined) ? cur.msgstr : poUnquote(m[2]);
			cur.fuzzy = cur.fuzzy || fuzzy;
		} else if (line.startsWith('"') && cur && field) {
			cur[field] += poUnquote(line);
		} else {
			throw new Error(`unexpected .po line: ${raw}`);
		}
	}
	flush();
	const header = entries.find((e) => e.msgid === '');
	return { header: header ? header.msgstr : '', entries: entries.filter((e) => e.msgid !== '') };
}

// msgid → msgstr of the translated, non-fuzzy entries.
function catalog(poFile) {
	const out = {};
	for (const e of parsePo(fs.readFileSync(poFile, 'utf8')).entries) {
		if (!e.fuzzy && e.msgstr) out[e.msgid] = e.msgstr;
	}
	return out;
}

// The printf directives of a string, in order (LuCI's String.prototype.format).
function directives(s) {
	return (s.match(/%(?:-?\d+)?(?:\.\d+)?[sdfxh%]/g) || []).map((d) => d.replace(/[-\d.]/g, ''));
}

module.exports = { appDir, viewFiles, extractCalls, collect, poQuote, parsePo, catalog, directives };
