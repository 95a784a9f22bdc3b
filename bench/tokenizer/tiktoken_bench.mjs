// Encodes a file with tiktoken's gpt2 encoding (encode_ordinary semantics: no special tokens),
// `reps` times after a warm-up; prints one JSON line with the median MB/s and the token count.
// node tiktoken_bench.mjs FILE [reps]
import { readFileSync } from "node:fs";
import { get_encoding } from "tiktoken";

const [file, repsArg] = process.argv.slice(2);
const reps = Number(repsArg ?? 5);
const text = readFileSync(file, "utf8");
const bytes = Buffer.byteLength(text, "utf8");
const enc = get_encoding("gpt2");
let tokens = enc.encode_ordinary(text).length;  // warm-up
const times = [];
for (let i = 0; i < reps; i++) {
  const t0 = process.hrtime.bigint();
  tokens = enc.encode_ordinary(text).length;
  times.push(Number(process.hrtime.bigint() - t0) / 1e9);
}
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)];
console.log(JSON.stringify({ mb_per_sec: bytes / median / 1e6, seconds: median, tokens, bytes }));
enc.free();
