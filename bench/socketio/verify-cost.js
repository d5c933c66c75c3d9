// CPU per `verifyToken` call, to tell how much of the peer's cost per
// connect is token verification (docs/benchmarks.md): @clerk/backend's
// networkless verifyToken (PEM `jwtKey`: it builds a JWK from the PEM and
// imports it with WebCrypto on every call), next to a bare WebCrypto RS256
// verify with the key imported once.
//
//   node verify-cost.js [ITERATIONS]      (default 2000)
//
// The token and key are made here (a fresh 2048-bit RSA key, Clerk-like
// claims), so it needs nothing else running.

"use strict";

const crypto = require("node:crypto");
const { verifyToken } = require("@clerk/backend");

const iterations = Number.parseInt(process.argv[2] || "2000", 10);
const issuer = "http://127.0.0.1:1";
const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const pem = publicKey.export({ type: "spki", format: "pem" });

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const head = b64({ alg: "RS256", typ: "JWT", kid: "bench" });
const body = b64({ sub: "user_1", iss: issuer, iat: now, nbf: now - 1, exp: now + 3600, sid: "sess_1" });
const signature = crypto.sign("sha256", Buffer.from(`${head}.${body}`), privateKey).toString("base64url");
const token = `${head}.${body}.${signature}`;

/** Mean CPU µs (user + system) per call of `once`, after a warm-up. */
async function cost(once) {
  for (let i = 0; i < 200; i++) {
    await once();
  }
  const before = process.cpuUsage();
  for (let i = 0; i < iterations; i++) {
    await once();
  }
  const used = process.cpuUsage(before);
  return (used.user + used.system) / iterations;
}

async function main() {
  const options = { jwtKey: pem, issuer };
  const claims = await verifyToken(token, options);
  if (claims.sub !== "user_1") {
    throw new Error("verifyToken did not verify the token");
  }
  const sdk = await cost(() => verifyToken(token, options));

  const key = await crypto.subtle.importKey(
    "spki",
    publicKey.export({ type: "spki", format: "der" }),
    { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const data = Buffer.from(`${head}.${body}`);
  const sig = Buffer.from(signature, "base64url");
  const bare = await cost(() => crypto.subtle.verify("RSASSA-PKCS1-v1_5", key, sig, data));
  const n = publicKey.export({ format: "jwk" }).n;
  const importOnly = await cost(() =>
    crypto.subtle.importKey(
      "jwk",
      { kty: "RSA", e: "AQAB", n, alg: "RS256" },
      { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
      false,
      ["verify"],
    ),
  );
  console.log(
    JSON.stringify({
      iterations,
      node: process.version,
      verify_token_cpu_us: Math.round(sdk),
      webcrypto_verify_key_imported_once_cpu_us: Math.round(bare),
      webcrypto_import_jwk_cpu_us: Math.round(importOnly),
    }),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
