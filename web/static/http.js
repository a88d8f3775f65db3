// JSON requests to our own origin, with the server's {"error", "message"} turned into ApiError.
// See docs/architecture.md, "Web (issue 7)": every error body is {"error": code, "message": text}.

export class ApiError extends Error {
  /** `status` is 0 when the request never got an answer (network down, server gone). */
  constructor(status, code, detail) {
    super(`${code}: ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** Send a request; resolve with the parsed JSON body, reject with ApiError. */
export async function request(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin", // the refresh cookie (HttpOnly, Path=/auth) rides along
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "network_error", err.message);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null; // a proxy's HTML error page: reported by status below
  }
  if (!resp.ok) {
    const code = typeof data?.error === "string" ? data.error : `http_${resp.status}`;
    let detail = typeof data?.message === "string" ? data.message : resp.statusText;
    const retryAfter = resp.headers.get("Retry-After");
    if (retryAfter) detail += ` (retry after ${retryAfter} s)`;
    throw new ApiError(resp.status, code, detail);
  }
  return data;
}
