// Package fake is an in-memory Datera Elastic Data Fabric API (v2.1 and v2.2) for tests and the
// demo: an http.Handler to serve with httptest.NewServer/NewTLSServer or the datera-sim command.
//
// It follows the Datera REST API as its schema and its drivers use it: unauthenticated
// GET /api_versions; PUT /login with JSON or form bodies answering {"key","version"}; sessions
// that expire after 15 minutes (Options.TokenTTL) with 401 AuthFailedError; the
// {"tenant","path","version","data"} envelope on every success, paged list metadata; error bodies
// {name, code, http, message, errors, ...} with NotFoundError 404 ("… does not exist"),
// ConflictError 409, InvalidRequestError 400, ValidationFailedError 422 (schema regexes, ranges,
// enums, and additionalProperties:false); app_instances addressed by id or name with id-based
// paths everywhere; storage_instances whose op_state turns "available" (and whose access IPs
// appear) only once online, after Options.OnlineDelay; deny_all access control by default;
// refusal to delete an online app_instance or to shrink a volume; ACLs replaced by PUT
// acl_policy (elements {path} only) or changed atomically by PUT acl_policy/initiators
// {op:add|remove} (409 on a duplicate add, 404 on removing an absent one); tenant-scoped
// initiators inherited from parent tenants, needing force in a sub-tenant or for a tenant's first
// (DAT-15931, v2.2 only; force is rejected on v2.1); performance policies; app_templates with
// template_override; metadata merged on PUT.
//
// Fault injection (Server.SetFault) per route: error rates and bursts (503 with a bare
// {"message"} body, or the retryable 500 "REST server is still initializing"), latency, connections
// dropped before handling or after handling (the client cannot tell whether a POST took effect),
// and forced session expiry; Server.ExpireSessions expires every session at once.
//
// Real iSCSI mode (Options.Exporter with a TgtExporter): every online storage_instance is a tgtd
// target on the tgtd portal, with file-backed LUNs and the Datera ACL as initiator-name binding;
// offline and delete remove it.
//
// Deliberate limits: no snapshots, clones, snapshot policies, initiator groups or restore points
// (requests using them get a clear InvalidRequestError); error codes other than the documented
// ones are the simulator's own.
//
// Everything is guarded by one lock, so the Server is safe for concurrent use.
package fake
