#!/usr/bin/env python3
"""Generates the malformed-file corpus and expected.txt (python3 stdlib only).

Each case is a small file and the outcome flashload must report: a StatusCode name and a substring
of the message. OK cases are valid edge cases. Run from anywhere; files land next to this script:

    python3 tests/data/malformed/make_corpus.py
"""
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st(header, data=b"", pad_to=8):
    """A safetensors file: 8-byte little-endian N, the header (padded with spaces), the data."""
    h = header.encode("utf-8") if isinstance(header, str) else header
    if pad_to:
        h += b" " * ((-(8 + len(h))) % pad_to)
    return struct.pack("<Q", len(h)) + h + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def hdr(obj):
    return json.dumps(obj, separators=(",", ":"))


CASES = []


def case(name, content, code, substring):
    CASES.append((name, content, code, substring))


def build():
    u8x2 = entry("U8", [2], 0, 2)
    # --- the 8-byte prefix -------------------------------------------------------------------------
    case("empty.safetensors", b"", "DATA_LOSS", "the file is empty")
    case("too_small_7_bytes.safetensors", b"\x02\x00\x00\x00\x00\x00\x00", "DATA_LOSS",
         "header too small")
    case("header_length_over_limit.safetensors", struct.pack("<Q", 100_000_001) + b"{}      ",
         "DATA_LOSS", "exceeds the limit of 100000000 bytes")
    case("header_length_u64_max.safetensors", b"\xff" * 8 + b"{}      ", "DATA_LOSS",
         "header too large")
    case("header_length_beyond_file.safetensors", struct.pack("<Q", 100) + b"{}      ",
         "DATA_LOSS", "the header would end at byte 108 but the file has 16 bytes")
    case("header_length_zero.safetensors", struct.pack("<Q", 0), "DATA_LOSS", "not valid JSON")
    # --- UTF-8 and JSON ----------------------------------------------------------------------------
    case("not_utf8.safetensors", st(b'{"a\xff":' + hdr(u8x2).encode() + b"}", b"xy"),
         "DATA_LOSS", "not valid UTF-8: byte 0xff at byte offset 11")
    case("not_utf8_overlong.safetensors", st(b'{"\xc0\xaf":' + hdr(u8x2).encode() + b"}", b"xy"),
         "DATA_LOSS", "not valid UTF-8: byte 0xc0 at byte offset 10")
    case("not_utf8_surrogate_bytes.safetensors",
         st(b'{"\xed\xa0\x80":' + hdr(u8x2).encode() + b"}", b"xy"), "DATA_LOSS",
         "not valid UTF-8")
    case("invalid_json_truncated.safetensors", st('{"a":{"dtype":"U8"'), "DATA_LOSS",
         "not valid JSON")
    case("invalid_json_trailing_characters.safetensors", st("{} x"), "DATA_LOSS", "not valid JSON")
    case("invalid_json_nul_padding.safetensors", st(b"{}\x00\x00\x00\x00\x00\x00", pad_to=0),
         "DATA_LOSS", "not valid JSON")
    case("invalid_json_form_feed.safetensors", st("\f{}"), "DATA_LOSS", "not valid JSON")
    case("invalid_json_leading_zero.safetensors",
         st('{"a":{"dtype":"U8","shape":[02],"data_offsets":[0,2]}}', b"xy"), "DATA_LOSS",
         "not valid JSON")
    case("invalid_json_lone_surrogate.safetensors",
         st('{"a\\ud800":' + hdr(u8x2) + "}", b"xy"), "DATA_LOSS", "not valid JSON")
    case("invalid_json_too_deep.safetensors",
         st('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":' + "[" * 126 + "]" * 126 +
            "}}", b"xy"), "DATA_LOSS", "not valid JSON")
    case("invalid_json_bigint_in_unknown_field.safetensors",
         st('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":18446744073709551616}}',
            b"xy"), "DATA_LOSS", "not valid JSON")
    # --- JSON shape --------------------------------------------------------------------------------
    case("header_not_object.safetensors", st("[]"), "DATA_LOSS", "must be a JSON object")
    case("header_null.safetensors", st("null"), "DATA_LOSS", "must be a JSON object")
    case("tensor_entry_null.safetensors", st('{"a":null}'), "DATA_LOSS",
         "tensor 'a' (header byte offset 9 of the file): entry must be an object")
    case("tensor_entry_array_too_short.safetensors", st('{"a":["U8",[2]]}', b"xy"), "DATA_LOSS",
         "must have 3 elements")
    case("shape_not_array.safetensors", st(hdr({"a": entry("U8", 2, 0, 2)}), b"xy"), "DATA_LOSS",
         "shape must be an array, got an integer")
    case("shape_negative.safetensors", st(hdr({"a": entry("U8", [-2], 0, 2)}), b"xy"),
         "DATA_LOSS", "shape holds a negative value -2")
    case("shape_float.safetensors", st('{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}',
                                       b"xy"), "DATA_LOSS", "shape holds a floating-point number")
    case("shape_negative_zero.safetensors",
         st('{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}'), "DATA_LOSS", "holds -0")
    case("shape_string.safetensors", st(hdr({"a": entry("U8", ["2"], 0, 2)}), b"xy"),
         "DATA_LOSS", "shape holds a string")
    case("data_offsets_three.safetensors",
         st('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2,2]}}', b"xy"), "DATA_LOSS",
         "data_offsets must have 2 elements")
    case("data_offsets_one.safetensors",
         st('{"a":{"dtype":"U8","shape":[2],"data_offsets":[2]}}', b"xy"), "DATA_LOSS",
         "data_offsets must have 2 elements")
    case("data_offsets_float.safetensors",
         st('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2.0]}}', b"xy"), "DATA_LOSS",
         "data_offsets holds a floating-point number")
    case("dtype_unknown.safetensors", st(hdr({"a": entry("F128", [1], 0, 16)}), b"x" * 16),
         "DATA_LOSS", "unknown dtype 'F128'")
    case("dtype_lowercase.safetensors", st(hdr({"a": entry("f16", [1], 0, 2)}), b"xy"),
         "DATA_LOSS", "unknown dtype 'f16' (dtypes are upper case: F16)")
    case("dtype_number.safetensors", st(hdr({"a": entry(16, [1], 0, 2)}), b"xy"), "DATA_LOSS",
         "dtype must be a string")
    case("dtype_object_two_keys.safetensors",
         st('{"a":{"dtype":{"U8":null,"I8":null},"shape":[2],"data_offsets":[0,2]}}', b"xy"),
         "DATA_LOSS", "dtype object must have exactly one key")
    case("missing_shape.safetensors", st('{"a":{"dtype":"U8","data_offsets":[0,0]}}'),
         "DATA_LOSS", "missing field `shape`")
    case("duplicate_field.safetensors",
         st('{"a":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"xy"),
         "DATA_LOSS", "duplicate field `dtype`")
    case("metadata_non_string_value.safetensors", st('{"__metadata__":{"format":1}}'),
         "DATA_LOSS", "__metadata__ value of key 'format' must be a string, got an integer")
    case("metadata_not_object.safetensors", st('{"__metadata__":"pt"}'), "DATA_LOSS",
         "__metadata__ must be an object")
    case("metadata_twice.safetensors", st('{"__metadata__":{},"__metadata__":{}}'), "DATA_LOSS",
         "duplicate field `__metadata__`")
    # --- offsets and sizes -------------------------------------------------------------------------
    case("offsets_not_from_zero.safetensors", st(hdr({"a": entry("U8", [2], 4, 6)}), b"xxxxxy"),
         "DATA_LOSS", "the first tensor must start at offset 0")
    case("offsets_gap.safetensors",
         st(hdr({"a": entry("U8", [1], 0, 1), "b": entry("U8", [1], 2, 3)}), b"xyz"),
         "DATA_LOSS", "tensor 'b' data_offsets [2, 3] (at byte offset 122 of the file): invalid "
         "offsets: leaves a gap of 1 bytes")
    case("offsets_overlap.safetensors",
         st(hdr({"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 1, 3)}), b"xyz"),
         "DATA_LOSS", "overlaps tensor 'a', which ends at 2, by 1 bytes")
    case("offsets_end_before_begin.safetensors",
         st(hdr({"a": entry("U8", [2], 0, 2), "b": entry("U8", [0], 2, 1)}), b"xy"),
         "DATA_LOSS", "end is before begin")
    case("element_count_overflow.safetensors",
         st(hdr({"a": entry("U8", [4294967296, 4294967296], 0, 2)}), b"xy"), "DATA_LOSS",
         "element count of shape [4294967296, 4294967296] overflows")
    case("bit_count_overflow.safetensors",
         st(hdr({"a": entry("F64", [2305843009213693952], 0, 8)}), b"x" * 8), "DATA_LOSS",
         "bit count of F64 [2305843009213693952] overflows")
    case("f4_odd_count.safetensors", st(hdr({"a": entry("F4", [3], 0, 2)}), b"xy"), "DATA_LOSS",
         "F4 [3] is 12 bits, not a whole number of bytes")
    case("f6_not_whole_bytes.safetensors", st(hdr({"a": entry("F6_E2M3", [3], 0, 3)}), b"xyz"),
         "DATA_LOSS", "is 18 bits, not a whole number of bytes")
    case("byte_span_mismatch.safetensors",
         st(hdr({"a.weight": entry("F16", [2, 3], 0, 10)}), b"x" * 10), "DATA_LOSS",
         "span of 10 bytes, expected 12 bytes for F16 [2, 3]")
    case("truncated_data.safetensors", st(hdr({"a": entry("F32", [4], 0, 16)}), b"x" * 11),
         "DATA_LOSS", "truncated: data section should end at byte 80 but the file has 75 bytes "
         "(5 bytes missing) (tensor 'a' is the first one cut off)")
    case("trailing_bytes.safetensors", st(hdr({"a": entry("U8", [2], 0, 2)}), b"xy???"),
         "DATA_LOSS", "trailing bytes: data section should end at byte 66 but the file has 69 "
         "bytes (3 bytes too many)")
    case("header_only_missing_data.safetensors", st(hdr({"a": entry("U8", [4], 0, 4)})),
         "DATA_LOSS", "4 bytes missing")
    # --- flashload's additions ---------------------------------------------------------------------
    case("duplicate_tensor_names.safetensors",
         st('{"a":' + hdr(u8x2) + ',"a":' + hdr(u8x2) + "}", b"xy"), "DATA_LOSS",
         "tensor 'a' (header byte offset 9 of the file): appears twice")
    case("git_lfs_pointer.safetensors",
         b"version https://git-lfs.github.com/spec/v1\n"
         b"oid sha256:4d7a2146e6c5bcd6c9d5fa1e5ec0e3c3e3f9c4f0f1a4a6b52f0d3f7a6b2f5e8a\n"
         b"size 548105171\n", "DATA_LOSS",
         "this is a Git LFS pointer file, not the weights: run `git lfs pull` (the real file is "
         "548105171 bytes)")
    case("html_page.safetensors",
         b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Log in to continue"
         b"</body></html>\n", "DATA_LOSS",
         "this is an HTML page (a login or error page saved instead of the file?)")
    case("html_page_lowercase.safetensors", b"\n\n<html lang=\"en\"><body>404</body></html>",
         "DATA_LOSS", "this is an HTML page")
    case("pytorch_zip.safetensors",
         b"PK\x03\x04\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
         b"\x00\x00\x00\x00\x10\x00\x12\x00archive/data.pklFB\x0e\x00ZZZZZZZZZZZZZZ\x80\x02}q\x00.",
         "DATA_LOSS", "this is a PyTorch zip checkpoint (.bin/.pt): convert it to safetensors")
    case("pickle_protocol2.safetensors",
         b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}q\x00.",
         "DATA_LOSS", "this is a Python pickle")
    case("pickle_protocol4.safetensors",
         b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.", "DATA_LOSS",
         "this is a Python pickle")
    case("gzip.safetensors", gzip.compress(st(hdr({"a": u8x2}), b"xy"), mtime=0), "DATA_LOSS",
         "this is a gzip-compressed file")
    case("json_config.safetensors",
         b'{\n  "architectures": ["LlamaForCausalLM"],\n  "hidden_size": 4096\n}\n', "DATA_LOSS",
         "this is a JSON file")
    case("index_json.safetensors",
         b'{\n  "metadata": {"total_size": 16},\n  "weight_map": {"a": '
         b'"model-00001-of-00002.safetensors"}\n}\n', "DATA_LOSS",
         "this is a sharded checkpoint index")
    # --- valid edge cases --------------------------------------------------------------------------
    case("ok_scalar_0d.safetensors", st(hdr({"s": entry("F32", [], 0, 4)}), b"\x00\x00\x80?"),
         "OK", "")
    case("ok_empty_tensors.safetensors",
         st(hdr({"e": entry("F32", [0], 0, 0), "z": entry("I64", [3, 0, 2], 0, 0),
                 "a": entry("U8", [2], 0, 2)}), b"xy"), "OK", "")
    case("ok_empty_object.safetensors", st("{}"), "OK", "")
    case("ok_empty_object_unpadded.safetensors", st("{}", pad_to=0), "OK", "")
    case("ok_metadata_only.safetensors", st('{"__metadata__":{"format":"pt"}}'), "OK", "")
    case("ok_metadata_null.safetensors", st('{"__metadata__":null}'), "OK", "")
    case("ok_metadata_duplicate_key.safetensors", st('{"__metadata__":{"k":"1","k":"2"}}'), "OK",
         "")
    case("ok_whitespace.safetensors", st(" \t\r\n{\n  \"a\" : " + hdr(u8x2) + " }\n\t", b"xy"),
         "OK", "")
    case("ok_unknown_fields.safetensors",
         st('{"a":{"extra":{"nested":[1,-0,2.5e3,null,true]},"dtype":"U8","shape":[2],'
            '"data_offsets":[0,2],"__metadata__":1,"extra2":"x","extra2":"y"}}', b"xy"), "OK", "")
    case("ok_entry_as_array.safetensors", st('{"a":["U8",[2],[0,2]]}', b"xy"), "OK", "")
    case("ok_dtype_as_object.safetensors",
         st('{"a":{"dtype":{"U8":null},"shape":[2],"data_offsets":[0,2]}}', b"xy"), "OK", "")
    case("ok_unordered_entries.safetensors",
         st(hdr({"b": entry("U8", [1], 1, 2), "a": entry("U8", [1], 0, 1)}), b"xy"), "OK", "")
    case("ok_zero_dim_before_huge_dims.safetensors",
         st(hdr({"a": entry("U8", [0, 4294967296, 4294967296], 0, 0)})), "OK", "")
    case("ok_escaped_names.safetensors",
         st('{"a\\u0000b":' + hdr(entry("U8", [1], 0, 1)) + ',"\\u00e9t\\u00e9 \\ud83d\\ude00":' +
            hdr(entry("U8", [1], 1, 2)) + "}", b"xy"), "OK", "")
    case("ok_sub_byte_dtypes.safetensors",
         st(hdr({"f4": entry("F4", [2, 2], 0, 2), "f6a": entry("F6_E2M3", [4], 2, 5),
                 "f6b": entry("F6_E3M2", [1, 4], 5, 8)}), b"x" * 8), "OK", "")
    case("ok_depth_127.safetensors",
         st('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":' + "[" * 125 + "]" * 125 +
            "}}", b"xy"), "OK", "")
    case("ok_header_padded_4096.safetensors",
         st(hdr({"a": entry("BF16", [2], 0, 4)}), b"\x80?\x00@", pad_to=4096), "OK", "")
    all_dtypes = [("BOOL", 8), ("F4", 4), ("F6_E2M3", 6), ("F6_E3M2", 6), ("U8", 8), ("I8", 8),
                  ("F8_E5M2", 8), ("F8_E4M3", 8), ("F8_E8M0", 8), ("F8_E4M3FNUZ", 8),
                  ("F8_E5M2FNUZ", 8), ("I16", 16), ("U16", 16), ("F16", 16), ("BF16", 16),
                  ("I32", 32), ("U32", 32), ("F32", 32), ("C64", 64), ("F64", 64), ("I64", 64),
                  ("U64", 64)]
    entries, offset = {}, 0
    for name, bits in all_dtypes:
        size = 4 * bits // 8
        entries["t_" + name.lower()] = entry(name, [4], offset, offset + size)
        offset += size
    case("ok_every_dtype.safetensors", st(hdr(entries), bytes(range(offset))), "OK", "")


def main():
    build()
    assert len(CASES) >= 40, len(CASES)
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for old in os.listdir(HERE):
        if old.endswith(".safetensors"):
            os.remove(os.path.join(HERE, old))
    lines = ["# file<TAB>expected StatusCode name<TAB>message substring (generated by make_corpus.py)"]
    for name, content, code, substring in CASES:
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(content)
        assert "\t" not in substring and "\n" not in substring
        lines.append(f"{name}\t{code}\t{substring}")
    with open(os.path.join(HERE, "expected.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} files")


if __name__ == "__main__":
    main()
