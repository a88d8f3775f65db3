// Sign-In with Ethereum and the access token's life in the page (docs/architecture.md,
// "Web (issue 7)", Authentication).
//
// The access token lives in memory only; the refresh token is the server's HttpOnly cookie
// `tp_refresh` (Path=/auth), so a reload resumes the session with one POST /auth/refresh.
// Events: "change" (signed in or out: detail {address}), "token" (a new access token to hand to
// the socket), "ended" (the server ended the session: detail {reason}).

import { ApiError, request } from "./http.js";
import { toChecksumAddress } from "./eip55.js";

const STATEMENT = "Sign in to tradepipe to see live market data and trade.";
const REFRESH_AT = 0.8; // of expires_in
const RETRY_MS = 5000; // a refresh that got no answer is retried while the token is still valid

/** Return the EIP-4361 message, exactly as the server's strict parser expects it. */
export function siweMessage({ domain, address, statement, uri, chainId, nonce, issuedAt }) {
  return (
    `${domain} wants you to sign in with your Ethereum account:\n${address}\n\n` +
    `${statement}\n\n` +
    `URI: ${uri}\nVersion: 1\nChain ID: ${chainId}\nNonce: ${nonce}\nIssued At: ${issuedAt}`
  );
}

function utf8Hex(text) {
  let hex = "0x";
  for (const byte of new TextEncoder().encode(text)) hex += byte.toString(16).padStart(2, "0");
  return hex;
}

// Display only: the server verified the token, the page just reads who it is for.
function jwtSubject(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "="))).sub ?? null;
  } catch {
    return null;
  }
}

/**
 * Sign in with an EIP-1193 provider (SIWE) for ``scope``; resolve the server's grant
 * ({access_token, expires_in, address, ...}); reject with Error or ApiError.
 */
export async function walletLogin(ethereum, { scope, statement }) {
  if (typeof ethereum?.request !== "function") {
    throw new Error("no Ethereum wallet found (window.ethereum)");
  }
  const accounts = await ethereum.request({ method: "eth_requestAccounts" });
  if (!Array.isArray(accounts) || accounts.length === 0) {
    throw new Error("the wallet returned no account");
  }
  const walletAddress = accounts[0];
  // EIP-4361 wants EIP-55; some wallets (MetaMask) return lowercase.
  const address = toChecksumAddress(walletAddress);
  const grantor = await request("/auth/nonce");
  const message = siweMessage({
    domain: grantor.domain,
    address,
    statement,
    uri: grantor.uri,
    chainId: grantor.chain_id,
    nonce: grantor.nonce,
    issuedAt: new Date().toISOString(),
  });
  const signature = await ethereum.request({
    method: "personal_sign",
    params: [utf8Hex(message), walletAddress],
  });
  return request("/auth/login", { method: "POST", body: { message, signature, scope } });
}

// Two tabs refreshing with the same cookie at once would look like a replayed refresh token and
// revoke the login (reuse detection): serialize refreshes across tabs where the browser can.
export function acrossTabs(fn) {
  return navigator.locks?.request ? navigator.locks.request("tp-auth-refresh", fn) : fn();
}

export class Session extends EventTarget {
  #token = null;
  #address = null;
  #expiresAt = 0;
  #timer = null;
  #refreshing = null;

  get token() {
    return this.#token;
  }

  get address() {
    return this.#address;
  }

  /** Run the SIWE flow with an EIP-1193 provider; reject with Error or ApiError. */
  async signIn(ethereum) {
    this.#accept(await walletLogin(ethereum, { scope: "web", statement: STATEMENT }));
  }

  /** Resume a session from the refresh cookie, if there is one; resolve true when signed in. */
  async resume() {
    // The refresh cookie is HttpOnly; its readable companion says whether there is one, so an
    // anonymous visit sends no request bound to fail.
    if (!document.cookie.split("; ").includes("tp_signed_in=1")) return false;
    try {
      await this.refresh();
      return true;
    } catch {
      return false; // no cookie, or an old one: anonymous, which is not an error
    }
  }

  /** Rotate the refresh token for a new access token; concurrent calls share one request. */
  refresh() {
    this.#refreshing ??= acrossTabs(() => request("/auth/refresh", { method: "POST", body: {} }))
      .then((grant) => this.#accept(grant))
      .finally(() => {
        this.#refreshing = null;
      });
    return this.#refreshing;
  }

  /** Tell the server to end the login (every token of it), then forget it here regardless. */
  async logout() {
    const token = this.#token;
    try {
      if (token) await request("/auth/logout", { method: "POST", body: {}, token });
    } finally {
      this.clear();
    }
  }

  /** Forget the session in this page (the server may still hold it). */
  clear() {
    clearTimeout(this.#timer);
    this.#timer = null;
    const was = this.#address;
    this.#token = null;
    this.#address = null;
    this.#expiresAt = 0;
    if (was !== null) this.dispatchEvent(new CustomEvent("change", { detail: { address: null } }));
  }

  #accept(grant) {
    if (typeof grant?.access_token !== "string" || !(grant.expires_in > 0)) {
      throw new ApiError(200, "malformed", "the server's token grant has no access_token");
    }
    const was = this.#address;
    const claimed = grant.address ?? jwtSubject(grant.access_token);
    this.#token = grant.access_token;
    this.#address = claimed ? toChecksumAddress(claimed) : was;
    this.#expiresAt = Date.now() + grant.expires_in * 1000;
    this.#schedule(grant.expires_in * 1000 * REFRESH_AT);
    if (this.#address !== was) {
      this.dispatchEvent(new CustomEvent("change", { detail: { address: this.#address } }));
    }
    this.dispatchEvent(new CustomEvent("token", { detail: { token: this.#token } }));
  }

  #schedule(delayMs) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#refreshOnTimer(), delayMs);
  }

  async #refreshOnTimer() {
    try {
      await this.refresh();
    } catch (err) {
      // An answer (401 refresh_reused / refresh_unknown...) ends the session; silence is retried.
      if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429) {
        this.clear();
        this.dispatchEvent(new CustomEvent("ended", { detail: { reason: err.message } }));
      } else if (Date.now() + RETRY_MS < this.#expiresAt) {
        this.#schedule(RETRY_MS);
      } else {
        this.clear();
        this.dispatchEvent(new CustomEvent("ended", { detail: { reason: err.message } }));
      }
    }
  }
}
