'use strict';
// A tiny PNG reader (8-bit RGB/RGBA, non-interlaced, as Chromium writes them) to tell
// a real screenshot from a blank one.
const fs = require('node:fs');
const zlib = require('node:zlib');

function decode(file) {
	const buf = fs.readFileSync(file);
	if (!buf.subarray(0, 8).equals(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]))) throw new Error(`${file}: not a PNG`);
	let off = 8, width, height, depth, colour, interlace;
	const idat = [];
	while (off < buf.length) {
		const len = buf.readUInt32BE(off), type = buf.toString('latin1', off + 4, off + 8), data = buf.subarray(off + 8, off + 8 + len);
		if (type === 'IHDR') {
			width = data.readUInt32BE(0); height = data.readUInt32BE(4);
			depth = data[8]; colour = data[9]; interlace = data[12];
		} else if (type === 'IDAT') {
			idat.push(data);
		}
		off += 12 + len;
	}
	const bpp = { 2: 3, 6: 4 }[colour];
	if (depth !== 8 || !bpp || interlace !== 0) throw new Error(`${file}: unsupported PNG (depth ${depth}, colour ${colour}, interlace ${interlace})`);
	const raw = zlib.inflateSync(Buffer.concat(idat));
	const stride = width * bpp, px = Buffer.alloc(stride * height);
	for (let y = 0; y < height; y++) {
		const f = raw[y * (stride + 1)], line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
		const out = px.subarray(y * stride, (y + 1) * stride), prev = y ? px.subarray((y - 1) * stride, y * stride) : Buffer.alloc(stride);
		for (let x = 0; x < stride; x++) {
			const a = x >= bpp ? out[x - bpp] : 0, b = prev[x], c = x >= bpp ? prev[x - bpp] : 0;
			let v = line[x];
			if (f === 1) v += a;
			else if (f === 2) v += b;
			else if (f === 3) v += (a + b) >> 1;
			else if (f === 4) { const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c); v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c; }
			out[x] = v & 255;
		}
	}
	return { width, height, bpp, px };
}

// How many pixels differ from white, and how many distinct colours (coarsely) appear.
function inkStats(file) {
	const { width, height, bpp, px } = decode(file);
	let ink = 0;
	const colours = new Set();
	for (let i = 0; i < width * height; i++) {
		const r = px[i * bpp], g = px[i * bpp + 1], b = px[i * bpp + 2];
		if (r < 240 || g < 240 || b < 240) ink++;
		colours.add(((r >> 4) << 8) | ((g >> 4) << 4) | (b >> 4));
	}
	return { width, height, ink, inkRatio: ink / (width * height), colours: colours.size };
}

module.exports = { decode, inkStats };
