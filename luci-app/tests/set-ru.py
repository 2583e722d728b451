# Helper for translators (not a test): sets msgstr of the given msgids in po/ru/tgtun.po
# and drops their fuzzy flag. Usage: python3 tests/set-ru.py FILE.json (msgid -> Russian).
import json, sys
po = 'po/ru/tgtun.po'
tr = json.load(open(sys.argv[1], encoding='utf-8'))
def q(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n') + '"'
blocks = open(po, encoding='utf-8').read().split('\n\n')
seen = set()
for n, b in enumerate(blocks):
    lines = b.split('\n')
    mid = [l for l in lines if l.startswith('msgid ')]
    if not mid:
        continue
    key = json.loads(mid[0][6:])
    if key not in tr:
        continue
    seen.add(key)
    out = []
    for l in lines:
        if l.startswith('#,'):
            flags = [f.strip() for f in l[2:].split(',') if f.strip() != 'fuzzy']
            if flags:
                out.append('#, ' + ', '.join(flags))
        elif l.startswith('msgstr'):
            out.append('msgstr ' + q(tr[key]))
        elif l.startswith('"'):
            continue  # continuation of msgstr (the po is written with --no-wrap)
        else:
            out.append(l)
    blocks[n] = '\n'.join(out)
missing = set(tr) - seen
if missing:
    sys.exit('not in the .po: ' + '; '.join(sorted(missing)))
open(po, 'w', encoding='utf-8').write('\n\n'.join(blocks))
