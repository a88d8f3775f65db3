// EIP-55 checksummed addresses, for the SIWE message (EIP-4361 requires the EIP-55 form).
//
// Wallets disagree on case: MetaMask's eth_requestAccounts returns lowercase addresses, so the page
// checksums whatever it is given. That needs Keccak-256 (the original Keccak padding, not
// SHA3-256), which browsers do not ship; this is a small BigInt implementation of Keccak-f[1600],
// fast enough for one 40-byte input per sign-in.

const MASK = (1n << 64n) - 1n;

// Round constants and rotation offsets (lane index x + 5y) from the Keccak reference.
const ROUND_CONSTANTS = [
  0x0000000000000001n, 0x0000000000008082n, 0x800000000000808an, 0x8000000080008000n,
  0x000000000000808bn, 0x0000000080000001n, 0x8000000080008081n, 0x8000000000008009n,
  0x000000000000008an, 0x0000000000000088n, 0x0000000080008009n, 0x000000008000000an,
  0x000000008000808bn, 0x800000000000008bn, 0x8000000000008089n, 0x8000000000008003n,
  0x8000000000008002n, 0x8000000000000080n, 0x000000000000800an, 0x800000008000000an,
  0x8000000080008081n, 0x8000000000008080n, 0x0000000080000001n, 0x8000000080008008n,
];
const ROTATIONS = [
  0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14,
].map(BigInt);

function rotl(lane, n) {
  return n === 0n ? lane : ((lane << n) | (lane >> (64n - n))) & MASK;
}

function keccakF(s) {
  const c = new Array(5);
  const b = new Array(25);
  for (const rc of ROUND_CONSTANTS) {
    for (let x = 0; x < 5; x++) c[x] = s[x] ^ s[x + 5] ^ s[x + 10] ^ s[x + 15] ^ s[x + 20];
    for (let x = 0; x < 5; x++) {
      const d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1n);
      for (let y = 0; y < 25; y += 5) s[x + y] ^= d;
    }
    for (let x = 0; x < 5; x++) {
      for (let y = 0; y < 5; y++) {
        b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(s[x + 5 * y], ROTATIONS[x + 5 * y]);
      }
    }
    for (let y = 0; y < 25; y += 5) {
      for (let x = 0; x < 5; x++) {
        s[x + y] = b[x + y] ^ ((b[((x + 1) % 5) + y] ^ MASK) & b[((x + 2) % 5) + y]);
      }
    }
    s[0] ^= rc;
  }
}

/** Return the Keccak-256 digest of `bytes` (a Uint8Array) as 64 lowercase hex digits. */
export function keccak256Hex(bytes) {
  const rate = 136; // bytes: 1600 - 2 * 256 bits
  const padded = new Uint8Array(bytes.length + rate - (bytes.length % rate));
  padded.set(bytes);
  padded[bytes.length] ^= 0x01;
  padded[padded.length - 1] ^= 0x80;
  const s = new Array(25).fill(0n);
  for (let off = 0; off < padded.length; off += rate) {
    for (let i = 0; i < rate / 8; i++) {
      let lane = 0n;
      for (let k = 7; k >= 0; k--) lane = (lane << 8n) | BigInt(padded[off + i * 8 + k]);
      s[i] ^= lane;
    }
    keccakF(s);
  }
  let hex = "";
  for (let i = 0; i < 4; i++) {
    for (let k = 0n; k < 64n; k += 8n) hex += ((s[i] >> k) & 0xffn).toString(16).padStart(2, "0");
  }
  return hex;
}

/** Return `address` in its EIP-55 mixed-case form; throw on anything but 0x + 40 hex digits. */
export function toChecksumAddress(address) {
  if (typeof address !== "string" || !/^0x[0-9a-fA-F]{40}$/.test(address)) {
    throw new Error(`not an Ethereum address: ${address}`);
  }
  const lower = address.slice(2).toLowerCase();
  const hash = keccak256Hex(new TextEncoder().encode(lower));
  let out = "0x";
  for (let i = 0; i < 40; i++) {
    out += parseInt(hash[i], 16) >= 8 ? lower[i].toUpperCase() : lower[i];
  }
  return out;
}
