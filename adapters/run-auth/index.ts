// Run authorization: who may run what. A destructive run needs a start token and a restore's
// approval an approval token, both derived from the worker's key (tokens.ts); the run that was
// authorized gets a grant its destructive activities look for (grants.ts); authorize.ts decides.
// Not dump trust (that is adapters/dump-store), though both rest on the same key.

export { authorizeRun, type Authorization, type AuthorizeRunInput } from './authorize.js';
export { GRANT_TTL_MS, grantRun, requireAuthorizedRun, requireGrant } from './grants.js';
export { acceptStartToken, approvalCommitment, approvalToken, canonicalInput, osUser, START_TOKEN_TTL_MS, startToken, type StartTokenFor } from './tokens.js';
