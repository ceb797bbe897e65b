// Package placement decides where a pod with Datera volumes may run and how good each node
// is. It is pure logic over pods, claims, PersistentVolumes and node reachability reports:
// no I/O, no clock of its own (callers pass now), no Kubernetes client.
//
// # The reachability report
//
// Each node's agent (cmd/flex agent) writes a coordination.k8s.io/v1 Lease named
// petfabric-node-<node> (LeaseName) in the release namespace, with holderIdentity = node,
// renewTime = the end of its last probe round and leaseDurationSeconds = the freshness TTL.
// A reader never compares renewTime with its own clock: a report is fresh while less than
// the TTL (capped, DefaultMaxReportTTL) has passed since the reader saw the Lease written
// (NodeReport.Observe; the rules are on NodeReport).
// Its annotation petfabric.io/report holds a JSON Report: the node's initiator name, for
// every configured backstoreServer the result of an iSCSI discovery probe of each portal
// ({ok, rttMicros, error}), and the volumeIDs the FlexVolume driver has attached on the
// node. Report is the single definition of that format; Version guards changes.
//
// # Filter
//
// Filter fails nodes with no report, an unreadable or stale report, a volume backstore the
// agent does not probe, an unreachable portal, or — for ReadWriteOnce volumes — an
// attachment still held by another node whose report is fresh. Every failure carries a
// message such as
//
//	cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused)
//
// that names neither the node nor a report's age, so that kube-scheduler's event counts
// the nodes per cause and repeated events fold into one (see Decision.Failed); Explain
// lists the nodes and ages for the extender's log.
//
// # Prioritize
//
// Prioritize scores 0..10 = rtt (0..6) + attached (0..2) + spread (0..2); the exact formula
// is documented on Prioritize.
package placement
