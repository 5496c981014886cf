import type { IncomingMessage, ServerResponse } from 'node:http';

/** A Connect/Express `next`. */
export type NextFunction = (error?: unknown) => void;

/** A middleware that works under Express 4, Express 5 and Connect. */
export type Middleware = (req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;
