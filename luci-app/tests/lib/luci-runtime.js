'use strict';
// Where LuCI's real client runtime is: `shared/luci` in a parent directory of the
// repository (in CI the repository's parent directory holds shared/; a git worktree may
// sit one level deeper), or $LUCI_RUNTIME. Missing means the tests cannot run: that is an
// error naming the places looked at, never a skip.
const fs = require('node:fs');
const path = require('node:path');
const { appDir } = require('./i18n');

const marker = 'modules/luci-base/htdocs/luci-static/resources/luci.js';

function luciRoot() {
	const tried = [];
	if (process.env.LUCI_RUNTIME) {
		const p = path.resolve(process.env.LUCI_RUNTIME);
		if (fs.existsSync(path.join(p, marker))) return p;
		throw new Error(`LUCI_RUNTIME=${process.env.LUCI_RUNTIME} does not hold LuCI's runtime (${marker} is missing)`);
	}
	let dir = path.resolve(appDir, '..', '..');
	for (let i = 0; i < 4; i++, dir = path.dirname(dir)) {
		const p = path.join(dir, 'shared', 'luci');
		tried.push(p);
		if (fs.existsSync(path.join(p, marker))) return p;
		if (path.dirname(dir) === dir) break;
	}
	throw new Error(`LuCI's real runtime is missing: looked for ${marker} under ${tried.join(', ')}; ` +
		'put openwrt/luci\'s client files in ../shared/luci next to the repository (see its README) or set LUCI_RUNTIME');
}

module.exports = { luciRoot };
