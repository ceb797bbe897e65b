// Package reconcile is the webhook's safety net: a leader-elected control loop (client-go
// informers, a rate-limited workqueue and tools/leaderelection with a Lease lock) that
//
//   - creates the pre-bound PersistentVolumes of StatefulSet ordinals the admission webhook
//     missed (it was down under failurePolicy: Ignore, or its deadline cut a large scale-up
//     short), with exactly the objects pkg/mutate decides, so webhook and loop never disagree —
//     but never for an ordinal at or above mutate's ordinal ceiling (replicas is an int32 any
//     user sets; the skipped ordinals are reported once);
//   - checks an existing PV of each claim against what the claim needs (mutate.CheckPV): a
//     mismatch is reported, and the PV is replaced only when that is safe (Available, never
//     bound, its claim not created yet, its Datera volume not created yet or recording this
//     claim as its owner);
//   - hands a Released Retain PV to the re-created claim of its name only for the same owner:
//     the claim exists (read live) and is Pending, and its namespace's UID equals the namespace
//     UID recorded on the PV. A namespace deleted and re-created under the same name is a new
//     tenant and does not inherit retained data; a PV recording no owner is left to an admin;
//   - deletes PersistentVolumes it manages (label app.kubernetes.io/managed-by=petfabric) that
//     the loop has seen Available, with their claim absent, for longer than a grace period,
//     while their StatefulSet is gone, or their ordinal is outside the StatefulSet's ordinals,
//     or their claim template is gone — only the PV: an Available PV never served a claim in
//     its life, so a Datera volume of the same (deterministic) volumeID predates it and holds
//     data a previous PV retained on purpose. The grace counts from when the loop first saw
//     that state, not from the PV's creation, and the claim and StatefulSet are read live
//     before the delete, so a freshly freed old PV is never lost to a lagging cache;
//   - for reclaim policy Delete, deletes a Released (or, as the PV controller marks flex volumes
//     it has no deleter for, Failed) PV's Datera app_instance through pkg/datera and only then
//     the PV, so the PV stays the record of a Datera volume still to delete; failures are
//     retried with per-item exponential backoff and never forgotten. The owner recorded on the
//     app_instance is read first: a volume recorded as another owner's (another cluster on the
//     same backstore, the previous tenant of a namespace name) is never deleted. A volume with
//     no recorded owner (made before owners were recorded) is deleted as before;
//   - fences: it is the only component that removes a dead holder's initiator from a
//     ReadWriteOnce volume's ACL, and only when exactly one node report names the initiator,
//     that report has not been seen to change for longer than Options.FenceAfter (judged by
//     this loop's clock, not the node's), no pod of the claim is on that node, and a pod of
//     the claim waits elsewhere (see DecideFence).
//
// Every delete carries a UID + resourceVersion precondition, and every update the
// resourceVersion read, so a PV that changed since it was judged (e.g. just got bound) is never
// deleted or overwritten. Events go to the StatefulSet (and to the PV, the claim or the pod for
// per-volume outcomes); metrics to a Prometheus registerer.
package reconcile
