/**
 * The router's snapshot of where keys are. It lives in `@dstore/hashring` so that direct-routing
 * clients place keys with the same code as the balancer (one implementation of "owner and
 * fall-back of a key"); the membership publishes it, the router reads one per request.
 */
export { Topology } from '@dstore/hashring';
