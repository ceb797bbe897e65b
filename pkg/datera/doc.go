// Package datera is a typed client for the Datera Elastic Data Fabric REST API v2.2, limited to
// what a block-volume driver needs: app_instances laid out as storage instance "storage-1" with
// volume "volume-1", admin state, target readiness, initiators, ACLs, access (IQN and portals),
// performance policy, resize and delete.
//
// The wire facts (paths, envelopes, error names, headers, validation rules) are the Datera
// REST API's as its schema and its own drivers use it; each is stated where it is encoded,
// and pkg/datera/fake is a simulator faithful to the same facts.
//
// Behaviour that callers rely on:
//
//   - Login is lazy. A 401 triggers exactly one re-login and one replay of the request; concurrent
//     401s share a single login (one login at a time, the others wait and reuse the fresh token).
//   - 503, the 500 "REST server is still initializing" and connection errors are retried with
//     capped exponential backoff (Config.Retry), bounded by the caller's context.
//   - A POST that is retried after a connection error and then answered 409 is resolved by GETting
//     the resource the first attempt created.
//   - Failures are typed: errors.Is(err, ErrNotFound / ErrConflict / ErrAuth / ErrValidation /
//     ErrUnavailable), and errors.As(err, *APIError) gives Datera's name, code and message.
//   - Operations are idempotent where the API allows it (create of an identical volume, delete of a
//     missing one, ACL add of a present initiator, ACL remove of an absent one).
//   - Passwords and session tokens are never logged nor put into errors.
//
// A Client is safe for concurrent use.
package datera
