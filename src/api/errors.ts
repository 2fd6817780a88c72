// Errors in OpenAI's wire shape {error: {message, type, param, code}} with an HTTP status,
// and the mapping from odsi's internal errors (routing, network, engine) to them.

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
  body(): OpenAiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const invalid = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, 'invalid_request_error', code, param);

/** Route-level failures are counted separately in the metrics: this names their reason. */
export function routeFailureReason(e: unknown): string | undefined {
  const err = e as { name?: string; code?: unknown };
  if (err?.name === 'NoRouteError') return 'no_route';
  if (err?.name === 'RouteError') return typeof err.code === 'string' ? err.code : 'route_error';
  return undefined;
}

/**
 * Map anything thrown while serving a request to an ApiError. Matching is by error name so
 * the API stays independent of the gateway and network modules.
 */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  const err = e as { name?: string; code?: unknown; message?: string; statusCode?: number };
  const msg = err?.message ?? String(e);
  if (err?.name === 'NoRouteError') return new ApiError(503, `no route through the swarm: ${msg}`, 'service_unavailable', 'no_route');
  if (err?.name === 'RouteError') {
    const code = typeof err.code === 'string' ? err.code : 'route_error';
    // the per-token budget ran out on the way: a timeout, not a missing route
    if (code === 'deadline') return new ApiError(504, `per-token deadline missed: ${msg}`, 'timeout_error', 'route_deadline');
    return new ApiError(503, `route failed (${code}): ${msg}`, 'service_unavailable', `route_${code}`);
  }
  if (err?.name === 'EngineError') {
    if (err.code === 'capacity') return new ApiError(503, msg, 'service_unavailable', 'capacity');
    if (err.code === 'bad_input') return invalid(msg);
    return new ApiError(500, msg, 'server_error', 'engine_error');
  }
  // fastify's own errors: bad JSON, wrong content type, body too large...
  if (err?.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
    return new ApiError(413, `request body too large: ${msg}`, 'invalid_request_error', 'request_too_large');
  if (err?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return new ApiError(415, `${msg}; send 'content-type: application/json'`, 'invalid_request_error', 'unsupported_media_type');
  if (typeof err?.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    const code = typeof err.code === 'string' ? err.code : null;
    return new ApiError(err.statusCode, msg, 'invalid_request_error', code === 'FST_ERR_CTP_INVALID_JSON_BODY' ? 'invalid_json' : code);
  }
  return new ApiError(500, `internal error: ${msg}`, 'server_error', 'internal_error');
}
