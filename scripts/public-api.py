#!/usr/bin/env python3
"""Lists tether-core's public API, one item per line, from rustdoc's JSON output.

Usage: python3 scripts/public-api.py target/doc/tether_core.json > core/public-api.txt

`scripts/public-api.sh` builds the JSON and diffs the result with the committed list, so a
change to the surface is a deliberate edit of `core/public-api.txt` (D58). Names, not full
signatures: every public module, type, field, variant, function, method, constant and trait
implementation, by the path an app writes. Auto traits and blanket implementations are left
out (they follow from the fields).
"""

import json
import sys


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    index = doc["index"]
    out: set[str] = set()

    def item(id_):
        return index.get(str(id_))

    def type_name(ty) -> str:
        if not isinstance(ty, dict):
            return "?"
        if "resolved_path" in ty:
            return ty["resolved_path"]["path"]
        if "primitive" in ty:
            return ty["primitive"]
        if "borrowed_ref" in ty:
            return "&" + type_name(ty["borrowed_ref"]["type"])
        if "generic" in ty:
            return ty["generic"]
        return next(iter(ty), "?")

    def impls(owner: str, impl_ids) -> None:
        for impl_id in impl_ids:
            imp = item(impl_id)
            if imp is None:
                continue
            inner = imp["inner"]["impl"]
            if inner.get("is_synthetic") or inner.get("blanket_impl") is not None:
                continue
            trait = inner.get("trait")
            if trait is not None:
                out.add(f"impl {trait['path']} for {owner}")
                continue
            for assoc_id in inner["items"]:
                assoc = item(assoc_id)
                if assoc is None or assoc.get("visibility") != "public":
                    continue
                kind = next(iter(assoc["inner"]))
                label = {"function": "fn", "assoc_const": "const", "constant": "const"}.get(
                    kind, kind
                )
                out.add(f"{label} {owner}::{assoc['name']}")

    def walk(id_, path: str, seen: set) -> None:
        it = item(id_)
        if it is None or id_ in seen:
            return
        seen = seen | {id_}
        kind, inner = next(iter(it["inner"].items()))
        if kind == "module":
            out.add(f"mod {path}")
            for child in inner["items"]:
                c = item(child)
                if c is None:
                    continue
                if "use" in c["inner"]:
                    use = c["inner"]["use"]
                    target = use.get("id")
                    if target is None or item(target) is None:
                        continue
                    if use.get("is_glob"):
                        for grand in item(target)["inner"]["module"]["items"]:
                            g = item(grand)
                            if g is not None and g.get("visibility") == "public":
                                walk(grand, f"{path}::{g['name']}", seen)
                    else:
                        walk(target, f"{path}::{use['name']}", seen)
                elif c.get("visibility") == "public" and c.get("name"):
                    walk(child, f"{path}::{c['name']}", seen)
        elif kind == "struct":
            out.add(f"struct {path}")
            shape = inner["kind"]  # "unit", {"plain": {...}} or {"tuple": [...]}
            fields = []
            if isinstance(shape, dict):
                fields = shape.get("plain", {}).get("fields", []) or [
                    f for f in (shape.get("tuple") or []) if f is not None
                ]
            for field in fields:
                fi = item(field)
                if fi is not None and fi.get("visibility") == "public":
                    out.add(f"field {path}::{fi['name']}")
            impls(path, inner["impls"])
        elif kind == "enum":
            out.add(f"enum {path}")
            for variant in inner["variants"]:
                v = item(variant)
                if v is None:
                    continue
                out.add(f"variant {path}::{v['name']}")
                vk = v["inner"]["variant"]["kind"]
                if isinstance(vk, dict) and "struct" in vk:
                    for field in vk["struct"]["fields"]:
                        fi = item(field)
                        if fi is not None:
                            out.add(f"field {path}::{v['name']}::{fi['name']}")
            impls(path, inner["impls"])
        elif kind == "function":
            out.add(f"fn {path}")
        elif kind == "constant":
            out.add(f"const {path}: {type_name(inner['type'])}")
        elif kind == "trait":
            out.add(f"trait {path}")
        elif kind == "type_alias":
            out.add(f"type {path}")
        else:
            out.add(f"{kind} {path}")

    walk(doc["root"], index[str(doc["root"])]["name"], set())
    sys.stdout.write("".join(f"{line}\n" for line in sorted(out)))


if __name__ == "__main__":
    main()
