'use strict';
// Regenerates po/templates/tgtun.pot from the views and the menu, then merges it into
// po/ru/tgtun.po (msgmerge keeps the translations; new strings arrive untranslated).
// Usage: node luci-app/tests/update-pot.js
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { appDir, collect, poQuote } = require('./lib/i18n');

const pot = path.join(appDir, 'po/templates/tgtun.pot');
let out = 'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8"\n';
for (const [msgid, refs] of collect()) {
	out += '\n' + refs.map((r) => `#: ${r}`).join('\n') + `\nmsgid ${poQuote(msgid)}\nmsgstr ""\n`;
}
fs.writeFileSync(pot, out);
const ru = path.join(appDir, 'po/ru/tgtun.po');
if (fs.existsSync(ru)) execFileSync('msgmerge', ['-q', '--no-wrap', '-U', '--backup=none', ru, pot], { stdio: 'inherit' });
console.log(`wrote ${path.relative(process.cwd(), pot)} (${collect().size} strings)`);
