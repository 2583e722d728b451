'use strict';
// UCI config files: parse /etc/config text (as the real uci(1) exports it, or as the
// dispatcher stand-in reads /etc/config/luci) into ordered sections ({ '.type', '.name',
// '.anonymous', option: string | string[] }) and write sections back as uci(1) would
// export them. Enough of uci's syntax for tgtun's config:
// config/option/list lines, single/double quotes, trailing '#' comments.
function tokens(line) {
	const out = [];
	let i = 0;
	while (i < line.length) {
		const c = line[i];
		if (c === ' ' || c === '\t') { i++; continue; }
		if (c === '#') break;
		let v = '';
		while (i < line.length && line[i] !== ' ' && line[i] !== '\t') {
			if (line[i] === "'") {
				const j = line.indexOf("'", i + 1);
				if (j < 0) throw new Error(`unterminated quote in: ${line}`);
				v += line.slice(i + 1, j); i = j + 1;
			} else if (line[i] === '"') {
				let j = i + 1;
				for (; j < line.length && line[j] !== '"'; j++) {
					if (line[j] === '\\') j++;
					v += line[j];
				}
				if (j >= line.length) throw new Error(`unterminated quote in: ${line}`);
				i = j + 1;
			} else if (line[i] === '#') {
				break;
			} else {
				v += line[i++];
			}
		}
		out.push(v);
		if (line[i] === '#') break;
	}
	return out;
}

function parse(text) {
	const sections = [];
	let cur = null, anon = 0;
	text.split('\n').forEach((raw, n) => {
		const t = tokens(raw);
		if (t.length === 0) return;
		if (t[0] === 'config') {
			const name = t[2];
			cur = { '.type': t[1], '.name': name || `cfg${(++anon).toString(16).padStart(2, '0')}0000`, '.anonymous': !name };
			sections.push(cur);
		} else if ((t[0] === 'option' || t[0] === 'list') && cur && t.length >= 2) {
			const v = t.length > 2 ? t[2] : '';
			if (t[0] === 'list') cur[t[1]] = (Array.isArray(cur[t[1]]) ? cur[t[1]] : []).concat([v]);
			else cur[t[1]] = v;
		} else {
			throw new Error(`line ${n + 1}: cannot parse: ${raw}`);
		}
	});
	return sections;
}

const q = (v) => `'${String(v).replace(/'/g, "'\\''")}'`;

function serialize(sections) {
	return sections.map((s) => {
		let out = s['.anonymous'] ? `config ${s['.type']}\n` : `config ${s['.type']} ${q(s['.name'])}\n`;
		for (const [k, v] of Object.entries(s)) {
			if (k.startsWith('.')) continue;
			if (Array.isArray(v)) for (const item of v) out += `\tlist ${k} ${q(item)}\n`;
			else out += `\toption ${k} ${q(v)}\n`;
		}
		return out;
	}).join('\n');
}

module.exports = { parse, serialize };
