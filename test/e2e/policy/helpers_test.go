package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// The release the tests install, with the chart's default ServiceAccount names.
const (
	releaseName = "petfabric"
	releaseNS   = "petfabric-system"
	webhookSA   = "petfabric-webhook"
	agentSA     = "petfabric-agent"

	webhookUser = "system:serviceaccount:" + releaseNS + ":" + webhookSA
	agentUser   = "system:serviceaccount:" + releaseNS + ":" + agentSA

	// The policy objects the chart names after the release.
	podPolicy    = releaseName + "-no-inline-datera-volumes"
	pvPolicy     = releaseName + "-datera-pv-writers"
	reportPolicy = releaseName + "-node-reports"

	// How long a new or changed policy may take to be enforced (the apiserver's policy
	// informer and type checker); tests poll with a dry run until then.
	policyDeadline = 60 * time.Second
)

// runHelm runs helm with args (plus --values when values is not empty) and returns stdout.
func runHelm(t testing.TB, values string, args ...string) (string, error) {
	t.Helper()
	return helmchart.Run(t, values, args...)
}

// helmTemplate renders the chart as release petfabric in petfabric-system, for the pinned
// Kubernetes version (helm template assumes v1.20 otherwise, which the chart refuses).
func helmTemplate(t testing.TB, values string) (string, error) {
	t.Helper()
	return helmchart.Template(t, values)
}

// render renders the chart or fails the test.
func render(t testing.TB, values string) string {
	t.Helper()
	return helmchart.Render(t, values)
}

// objects decodes rendered manifests.
func objects(t testing.TB, manifests string) []*unstructured.Unstructured {
	t.Helper()
	return helmchart.Objects(t, manifests)
}

// env is a real control plane with the release namespace and helpers to act as identities.
type env struct {
	t   *testing.T
	ctx context.Context
	c   *cluster.Cluster
}

// start renders the chart first (so a missing or broken chart fails before the costly
// control plane starts), then starts the control plane.
func start(t *testing.T, nodes ...string) *env {
	t.Helper()
	render(t, "")
	return startCluster(t, nodes...)
}

// startCluster starts a control plane with kwok nodes and the release namespace.
func startCluster(t *testing.T, nodes ...string) *env {
	t.Helper()
	cluster.RequireBinaries(t)
	var specs []cluster.NodeSpec
	for _, n := range nodes {
		specs = append(specs, cluster.NodeSpec{Name: n})
	}
	c := cluster.Start(t, cluster.Options{Nodes: specs})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, c: c}
	e.namespace(releaseNS)
	return e
}

func (e *env) namespace(name string) {
	e.t.Helper()
	_, err := e.c.Client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(e.t, cluster.IgnoreAlreadyExists(err), "create namespace %s", name)
	// Pods need the namespace's default ServiceAccount, which a controller adds.
	err = wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	require.NoError(e.t, err, "namespace %s never got its default ServiceAccount", name)
}

// serviceAccount creates a ServiceAccount (and its namespace).
func (e *env) serviceAccount(ns, name string) {
	e.t.Helper()
	e.namespace(ns)
	_, err := e.c.Client.CoreV1().ServiceAccounts(ns).Create(e.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(e.t, cluster.IgnoreAlreadyExists(err), "create ServiceAccount %s/%s", ns, name)
}

func saSubject(ns, name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
}

// grantCluster gives subjects a ClusterRole with rules, cluster-wide.
func (e *env) grantCluster(name string, rules []rbacv1.PolicyRule, subjects ...rbacv1.Subject) {
	e.t.Helper()
	rbac := e.c.Client.RbacV1()
	_, err := rbac.ClusterRoles().Create(e.ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
	require.NoError(e.t, err, "create ClusterRole %s", name)
	_, err = rbac.ClusterRoleBindings().Create(e.ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   subjects,
	}, metav1.CreateOptions{})
	require.NoError(e.t, err, "create ClusterRoleBinding %s", name)
}

// grantNamespace gives subjects a Role with rules in ns.
func (e *env) grantNamespace(ns, name string, rules []rbacv1.PolicyRule, subjects ...rbacv1.Subject) {
	e.t.Helper()
	rbac := e.c.Client.RbacV1()
	_, err := rbac.Roles(ns).Create(e.ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
	require.NoError(e.t, err, "create Role %s/%s", ns, name)
	_, err = rbac.RoleBindings(ns).Create(e.ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   subjects,
	}, metav1.CreateOptions{})
	require.NoError(e.t, err, "create RoleBinding %s/%s", ns, name)
}

// token requests a token of ServiceAccount ns/sa, bound to bound when not nil.
func (e *env) token(ns, sa string, bound *authenticationv1.BoundObjectReference) string {
	e.t.Helper()
	tr, err := e.c.Client.CoreV1().ServiceAccounts(ns).CreateToken(e.ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600), BoundObjectRef: bound},
	}, metav1.CreateOptions{})
	require.NoError(e.t, err, "TokenRequest for %s/%s", ns, sa)
	return tr.Status.Token
}

// as returns a client that authenticates with token, like a pod using it would.
func (e *env) as(token string) kubernetes.Interface {
	e.t.Helper()
	cfg := &rest.Config{
		Host:            e.c.Config.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.c.CAPEM},
		QPS:             100, Burst: 200,
		UserAgent: "petfabric-policy-test",
	}
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(e.t, err)
	return cs
}

// asSA returns a client with a fresh, unbound token of ServiceAccount ns/name.
func (e *env) asSA(ns, name string) kubernetes.Interface {
	e.t.Helper()
	e.serviceAccount(ns, name)
	return e.as(e.token(ns, name, nil))
}

// install renders the chart with values, applies its policies and bindings with kubectl
// (strict schema validation on the server) and waits until the apiserver has type-checked
// every policy, requiring that no expression drew a warning. The programs' objects are left
// out: these tests act as the programs' identities themselves, and the webhook configuration
// would send their requests to a webhook that does not run here.
func (e *env) install(values string) {
	e.t.Helper()
	var docs []string
	for _, o := range objects(e.t, render(e.t, values)) {
		if o.GetKind() == "ValidatingAdmissionPolicy" || o.GetKind() == "ValidatingAdmissionPolicyBinding" {
			b, err := yaml.Marshal(o.Object)
			require.NoError(e.t, err, "encode %s %s", o.GetKind(), o.GetName())
			docs = append(docs, string(b))
		}
	}
	manifests := strings.Join(docs, "---\n")
	out, err := e.c.KubectlInput(manifests, "apply", "--validate=strict", "-f", "-")
	require.NoError(e.t, err, "kubectl apply the rendered chart")
	e.t.Logf("kubectl apply:\n%s", strings.TrimSpace(out))
	var names []string
	for _, o := range objects(e.t, manifests) {
		if o.GetKind() == "ValidatingAdmissionPolicy" {
			names = append(names, o.GetName())
		}
	}
	for _, name := range names {
		var last *admissionregistrationv1.ValidatingAdmissionPolicy
		err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, policyDeadline, true, func(ctx context.Context) (bool, error) {
			p, err := e.c.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			last = p
			return p.Status.ObservedGeneration == p.Generation && p.Status.TypeChecking != nil, nil
		})
		require.NoError(e.t, err, "policy %s was never type-checked: %+v", name, last)
		require.Empty(e.t, last.Status.TypeChecking.ExpressionWarnings, "policy %s: type-check warnings", name)
	}
}

// waitEnforced polls attempt (a dry run of a request the policy denies) until the apiserver
// denies it through policy: a new policy or binding takes a moment to reach the apiserver's
// admission plugin.
func (e *env) waitEnforced(policy string, attempt func(ctx context.Context) error) {
	e.t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, policyDeadline, true, func(ctx context.Context) (bool, error) {
		last = attempt(ctx)
		return deniedBy(last, policy), nil
	})
	require.NoError(e.t, err, "policy %s never enforced; last result: %v", policy, last)
}

// waitAllowed polls attempt (a dry run) until it succeeds: for a changed binding or
// parameter that now allows it.
func (e *env) waitAllowed(what string, attempt func(ctx context.Context) error) {
	e.t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, policyDeadline, true, func(ctx context.Context) (bool, error) {
		last = attempt(ctx)
		return last == nil, nil
	})
	require.NoError(e.t, err, "%s never allowed; last result: %v", what, last)
}

// deniedBy reports whether err is a denial by the named ValidatingAdmissionPolicy.
func deniedBy(err error, policy string) bool {
	return err != nil && apierrors.IsForbidden(err) &&
		strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+policy+"'")
}

// requireDenied requires a denial by policy whose message contains every want, and logs it.
func requireDenied(t testing.TB, err error, policy string, want ...string) {
	t.Helper()
	require.Error(t, err, "expected a denial by %s", policy)
	require.Truef(t, deniedBy(err, policy), "expected a denial by ValidatingAdmissionPolicy %s, got: %v", policy, err)
	for _, w := range want {
		require.Contains(t, err.Error(), w)
	}
	t.Logf("denied as expected: %v", err)
}

// dryRun is the DryRun option of a request: tests probe policies with dry runs so a probe
// that is (still) allowed changes nothing.
func dryRun(dry bool) []string {
	if dry {
		return []string{metav1.DryRunAll}
	}
	return nil
}
