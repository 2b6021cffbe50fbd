// An HS256 JWT as an identity provider would sign it; `header` lets a
// test forge other algorithms.
import { createHmac } from 'node:crypto';

const b64 = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');

export function jwt(claims, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const body = `${b64(header)}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
