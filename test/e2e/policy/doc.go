// Package policy holds the end-to-end tests of the admission policies in charts/petfabric: the
// chart is rendered with the pinned helm, applied to a real control plane (test/cluster), and
// every rule is exercised by the identity it is about (ServiceAccount tokens from TokenRequest,
// with RBAC that would allow the action), first without the policy to show the action works,
// then with it to show the policy is what stops it.
package policy
