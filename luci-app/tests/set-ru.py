# Helper for translators (not a test): fills msgstr of the given msgids in po/ru/tgtun.po.
# Usage: python3 tests/set-ru.py FILE.json   (a JSON object msgid -> Russian text)
import json, re, sys
po = 'po/ru/tgtun.po'
tr = json.load(open(sys.argv[1], encoding='utf-8'))
text = open(po, encoding='utf-8').read()
def q(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n') + '"'
for k, v in tr.items():
    pat = 'msgid ' + q(k) + '\nmsgstr ""\n'
    if pat not in text:
        if ('msgid ' + q(k) + '\n') in text:
            continue
        sys.exit('not in the .po: ' + k)
    text = text.replace(pat, 'msgid ' + q(k) + '\nmsgstr ' + q(v) + '\n')
open(po, 'w', encoding='utf-8').write(text)
