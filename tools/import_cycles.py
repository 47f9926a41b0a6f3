#!/usr/bin/env python3
"""Finds import cycles between the files of a crate (issue 11).

An edge A -> B means file A names an item of file B through a `crate::`, `super::` or `self::`
path (in a `use` or inline). `mod` declarations are not edges. Prints every strongly connected
component of more than one file; exits 1 if there is one.

    python3 tools/import_cycles.py [-v] [--baseline tools/import_cycles.baseline] node/src wire/src

`-v` prints the paths behind each edge. `tests/tests/import_cycles.rs` runs it with the baseline,
so `cargo test -p exchange-tests --test import_cycles` fails on any new cycle.
"""
import os, re, sys

def modules(root):
    """module path (tuple) -> file"""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith('.rs'):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'):
                rel = rel[:-1]
            out[tuple(rel)] = full
    return out

def drop_test_modules(src):
    """`#[cfg(test)] mod tests { ... }`: its `super::*` is the file itself, and tests may lean on
    anything; they are not part of the file's dependencies."""
    while True:
        m = re.search(r'#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{', src)
        if not m:
            return src
        depth, i = 1, m.end()
        while i < len(src) and depth:
            depth += src[i] == '{'
            depth -= src[i] == '}'
            i += 1
        src = src[:m.start()] + src[i:]

def strip(src):
    src = re.sub(r'//[^\n]*', '', src)
    src = re.sub(r'/\*.*?\*/', '', src, flags=re.S)
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)
    return drop_test_modules(src)

def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]"""
    tree = tree.strip()
    i = tree.find('{')
    if i < 0:
        return [tree.split(' as ')[0].strip()]
    prefix, body = tree[:i], tree[i + 1:tree.rfind('}')]
    parts, depth, cur = [], 0, ''
    for ch in body:
        if ch == ',' and depth == 0:
            parts.append(cur); cur = ''
            continue
        depth += ch == '{'
        depth -= ch == '}'
        cur += ch
    parts.append(cur)
    return [prefix + p2 for p in parts if p.strip() for p2 in expand(p)]

def paths(src, children):
    """Paths that may name an item of this crate: `crate::`, `super::`, `self::`, and paths
    starting with a child module's name (`custody::take`, `use committer::Committer`)."""
    src = strip(src)
    found = []
    for m in re.finditer(r'\buse\s+([^;]+);', src):
        for p in expand(m.group(1).replace('\n', ' ').replace(' ', '')):
            first = p.split('::')[0]
            found.append('self::' + p if first in children else p)
    for m in re.finditer(r'(?<![:\w])((?:crate|super|self)(?:::[A-Za-z_]\w*)+)', src):
        found.append(m.group(1))
    for m in re.finditer(r'(?<![:\w.])([a-z_]\w*)((?:::[A-Za-z_]\w*)+)', src):
        if m.group(1) in children:
            found.append('self::' + m.group(1) + m.group(2))
    return found

def reexports(src, mod, mods, children):
    """`pub use child::Item;` in a module: Item -> the path it re-exports (a facade, not an edge
    for whoever names Item through it)."""
    out = {}
    for m in re.finditer(r'\bpub(?:\([^)]*\))?\s+use\s+([^;]+);', strip(src)):
        for p in expand(m.group(1).replace('\n', ' ').replace(' ', '')):
            if p.split('::')[0] in children:
                p = 'self::' + p
            name = p.split('::')[-1]
            if name != '*':
                out[name] = p
    return out

def resolve(path, here, mods, facades=None, depth=0):
    segs = path.split('::')
    if segs[0] == 'crate':
        base, segs = (), segs[1:]
    elif segs[0] in ('super', 'self'):
        base = here
        while segs and segs[0] in ('super', 'self'):
            if segs[0] == 'super':
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    full = base + tuple(segs)
    for n in range(len(full), -1, -1):
        if full[:n] in mods:
            rest = full[n:]
            if facades and rest and depth < 8 and rest[0] in facades.get(full[:n], {}):
                inner = resolve(facades[full[:n]][rest[0]], full[:n], mods, facades, depth + 1)
                if inner is not None:
                    return inner
            return full[:n]
    return None

WHY = {}

def graph(root):
    mods = modules(root)
    edges = {}
    kids = {mod: {m[-1] for m in mods if len(m) == len(mod) + 1 and m[:len(mod)] == mod} for mod in mods}
    facades = {mod: reexports(open(f, encoding='utf-8').read(), mod, mods, kids[mod]) for mod, f in mods.items()}
    for mod, f in mods.items():
        src = open(f, encoding='utf-8').read()
        # `mod.rs` files: self:: resolves inside the folder; a plain file's self:: is itself.
        targets = set()
        why = WHY.setdefault(mod, {})
        children = {m[-1] for m in mods if len(m) == len(mod) + 1 and m[:len(mod)] == mod}
        for p in paths(src, children):
            t = resolve(p, mod, mods, facades)
            if t is not None and t != mod and not (len(t) < len(mod) and mod[:len(t)] == t and p.startswith('self')):
                targets.add(t)
                why.setdefault(t, set()).add(p)
        # A child naming its parent folder only to reach a sibling module is not an edge to the
        # parent file: `super::sibling` resolves to the sibling, handled by resolve().
        edges[mod] = targets
    return mods, edges

def sccs(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out

def load_baseline(path):
    """Cycles known and being taken apart: `ROOT: a, b::c` per line. A cycle found passes if all its
    files are in one known cycle; a new cycle, or a known one that grew, fails."""
    known = []
    if path:
        for line in open(path, encoding='utf-8'):
            line = line.split('#')[0].strip()
            if line:
                root, files = line.split(':', 1)
                known.append((root.strip(), {f.strip() for f in files.split(',')}))
    return known

def main(roots, baseline=None):
    bad = False
    known = load_baseline(baseline)
    for root in roots:
        mods, edges = graph(root)
        for comp in sccs(edges):
            names = ['::'.join(c) or '(root)' for c in comp]
            if any(r == root and set(names) <= files for r, files in known):
                print(f'{root}: known cycle (in {baseline}): ' + ', '.join(names))
                continue
            bad = True
            print(f'{root}: cycle among {len(comp)} files: ' + ', '.join(names))
            for a in comp:
                for b in sorted(edges[a] & set(comp)):
                    print(f'    {"::".join(a) or "(root)"} -> {"::".join(b) or "(root)"}'
                          + ('   ' + ' '.join(sorted(WHY[a][b])) if VERBOSE else ''))
    if not bad:
        print('no import cycles in ' + ', '.join(roots))
    return 1 if bad else 0

VERBOSE = '-v' in sys.argv

if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if a != '-v']
    base = None
    if '--baseline' in args:
        i = args.index('--baseline')
        base = args[i + 1]
        del args[i:i + 2]
    sys.exit(main(args or ['node/src', 'wire/src'], base))
