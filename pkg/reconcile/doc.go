// Package reconcile is the webhook's safety net: a leader-elected control loop (client-go
// informers, a rate-limited workqueue and tools/leaderelection with a Lease lock) that
//
//   - creates the pre-bound PersistentVolumes of StatefulSet ordinals the admission webhook
//     missed (it was down under failurePolicy: Ignore, or its deadline cut a large scale-up
//     short), with exactly the objects pkg/mutate decides, so webhook and loop never disagree;
//   - deletes PersistentVolumes it manages (label app.kubernetes.io/managed-by=petfabric) that
//     stayed Available longer than a grace period while their StatefulSet is gone, or their
//     ordinal is outside the StatefulSet's ordinals, or their claim template is gone — only the
//     PV: an Available PV never served a claim in its life, so a Datera volume of the same
//     (deterministic) volumeID predates it and holds data a previous PV retained on purpose;
//   - for reclaim policy Delete, deletes a Released (or, as the PV controller marks flex volumes
//     it has no deleter for, Failed) PV's Datera app_instance through pkg/datera and only then
//     the PV, so the PV stays the record of a Datera volume still to delete; failures are
//     retried with per-item exponential backoff and never forgotten.
//
// Every delete carries a UID + resourceVersion precondition, so a PV that changed since it was
// judged (e.g. just got bound) is never deleted. A Released Retain PV is never deleted. Events go
// to the StatefulSet (and to the PV for per-volume outcomes); metrics to a Prometheus registerer.
package reconcile
