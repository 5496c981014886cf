// `express4` is an npm alias of express@4, installed to test under both majors. Its API is the
// one @types/express describes closely enough for mounting middleware.
declare module 'express4' {
  import type express from 'express';
  const express4: typeof express;
  export default express4;
}
