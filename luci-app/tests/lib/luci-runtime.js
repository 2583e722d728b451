'use strict';
// Where the shared test inputs are: `shared/NAME` in a parent directory of the
// repository (in CI the repository's parent directory holds shared/; a git worktree may
// sit one level deeper). LuCI's real client runtime is shared/luci, or $LUCI_RUNTIME;
// OpenWrt's sources and luci-base's ACL are shared/openwrt. Missing means the tests
// cannot run: that is an error naming the places looked at, never a skip.
const fs = require('node:fs');
const path = require('node:path');
const { appDir } = require('./i18n');

const marker = 'modules/luci-base/htdocs/luci-static/resources/luci.js';

// The directory shared/NAME that holds the file `probe`.
function sharedDir(name, probe) {
	const tried = [];
	let dir = path.resolve(appDir, '..', '..');
	for (let i = 0; i < 4; i++, dir = path.dirname(dir)) {
		const p = path.join(dir, 'shared', name);
		tried.push(p);
		if (fs.existsSync(path.join(p, probe))) return p;
		if (path.dirname(dir) === dir) break;
	}
	throw new Error(`shared/${name} is missing: looked for ${probe} under ${tried.join(', ')}; ` +
		`put it next to the repository (../shared/${name}, see its README)`);
}

function luciRoot() {
	if (process.env.LUCI_RUNTIME) {
		const p = path.resolve(process.env.LUCI_RUNTIME);
		if (fs.existsSync(path.join(p, marker))) return p;
		throw new Error(`LUCI_RUNTIME=${process.env.LUCI_RUNTIME} does not hold LuCI's runtime (${marker} is missing)`);
	}
	try {
		return sharedDir('luci', marker);
	} catch (e) {
		throw new Error(`LuCI's real runtime is missing: ${e.message}; openwrt/luci's client files belong in ../shared/luci, or set LUCI_RUNTIME`);
	}
}

module.exports = { luciRoot, sharedDir };
