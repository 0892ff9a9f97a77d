const kv = await Deno.openKv(":memory:");
for (const k of ["a", "a/b", "a\u0000", "ab", "\uD800", "\u{1F600}", "\uFFFD", "\uE000", "b", ""]) {
  try { await kv.set(["kv", "ns", k], 1); } catch (e) { console.log("set fail", JSON.stringify(k), String(e)); }
}
for await (const e of kv.list({ prefix: ["kv", "ns"], start: ["kv", "ns", "a"] })) console.log(JSON.stringify(e.key[2]), [...String(e.key[2])].map(c=>c.codePointAt(0)!.toString(16)));
try { await kv.set(["k", "x".repeat(3000)], 1); } catch (e) { console.log("bigkey", String(e)); }
try { await kv.get(["k", "x".repeat(3000)]); } catch (e) { console.log("bigkey get", String(e)); }
try { await kv.set(["v"], new Uint8Array(65536)); console.log("64k ok"); } catch (e) { console.log("64k", String(e)); }
try { await kv.set(["v"], new Uint8Array(65537)); console.log("64k+1 ok"); } catch (e) { console.log("64k+1", String(e)); }
const a = kv.atomic(); for (let i = 0; i < 13; i++) a.set(["c", i], new Uint8Array(61440)); 
try { console.log(await a.commit()); } catch (e) { console.log("13 chunks", String(e)); }
const b = kv.atomic(); for (let i = 0; i < 12; i++) b.set(["c", i], new Uint8Array(61440)); 
try { console.log(await b.commit()); } catch (e) { console.log("12 chunks", String(e)); }
const r = await kv.set(["x"], 1); console.log(r, typeof r.versionstamp);
try { console.log((await kv.getMany(Array.from({length: 11}, (_, i) => ["c", i]))).length); } catch (e) { console.log("getMany 11", String(e)); }
try { await kv.atomic().check({key:["x"], versionstamp: "zz"}).commit(); } catch (e) { console.log("bad vs", String(e)); }
try { await kv.atomic().check({key:["x"], versionstamp: "0000000000000000000g"}).commit(); } catch (e) { console.log("bad vs2", String(e)); }
try { await kv.set(["y"], 1, {expireIn: -5}); console.log("neg expire ok") } catch (e) { console.log("neg expire", String(e)); }
kv.close();
