package product

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/petfabric/petfabric/pkg/placement"
)

// The walkthrough's objects: the 2016 blog's StorageClass, headless Service and pet set,
// translated to today's APIs (apps/v1 StatefulSet; the class's provisioner is petfabric's).
const (
	WalkNamespace = "blog"
	WalkClass     = "datera-gold"
	WalkSet       = "db"
	WalkClaim     = "data"
)

// Walk is one run of the walkthrough against an Env; steps share what they learn here.
type Walk struct {
	Env *Env
	// Began is when the walkthrough started; FirstPV when `kubectl get pv` first showed the
	// pets' volumes.
	Began, FirstPV time.Time
	// moved is the pet the move step moved (the re-create step checks its data too).
	markers map[string]string // pet → marker text written into its volume
}

// NewWalk starts a walkthrough.
func NewWalk(e *Env) *Walk { return &Walk{Env: e, Began: time.Now(), markers: map[string]string{}} }

// Step is one narrated step: Run does it and returns what it observed.
type Step struct {
	Name  string
	Title string
	Say   string // narration, printed before the step runs
	Run   func(ctx context.Context, w *Walk) (*Observed, error)
}

// Shown is a command line and what it printed.
type Shown struct {
	Command string
	Output  string
}

// Pet is one pet as the steps saw it.
type Pet struct {
	Name, Node, Phase, UID string
	Claim, PV, VolumeID    string
	// MountDir is kubelet's pod volume directory; MountLine its /proc/self/mountinfo line;
	// DriverLine the driver's log line of kubelet's mount call's reply.
	MountDir, MountLine, DriverLine string
}

// AppInstance is a Datera app_instance as the simulator's API returns it.
type AppInstance struct {
	Name       string
	AdminState string
	OpState    string
	IQN        string
	ACL        []string // initiator names
}

// Move is what the move step saw.
type Move struct {
	Pet, From, To        string
	ACLBefore, ACLAfter  []string
	OldMountDir          string
	OldStillMounted      bool
	NewMountLine         string
	Marker, ReadBack     string
	History              []ACLChange // the simulator's ACL changes of the volume's target during the move
	FromInitiator, ToIni string
}

// Observed is what a step saw; each step fills its part.
type Observed struct {
	Shown        []Shown
	Pets         []Pet
	PVs          []corev1.PersistentVolume
	AppInstances []AppInstance
	// Reports: node → the portal verdicts of its agent's report ("ip:port ok" / "... error").
	Reports map[string][]string
	// SchedulerEvent is the FailedScheduling event's message of a pet that only the
	// unreachable node could take.
	SchedulerEvent string
	Move           *Move
	// DataBack: pet → the marker read back after the StatefulSet was re-created.
	DataBack map[string]string
	// PVsBefore: claim → PV before the StatefulSet was deleted (re-create step).
	PVsBefore map[string]string
	// Targets are tgtd's targets after the step.
	Targets []string
}

func (o *Observed) show(cmd, out string) { o.Shown = append(o.Shown, Shown{Command: cmd, Output: out}) }

// Steps is the walkthrough, in order. The demo runs them up to "move"; the e2e runs all.
func Steps() []Step {
	return []Step{
		{Name: "storageclass", Title: "A StorageClass for Datera",
			Say: "The blog starts with a StorageClass naming the Datera backstore and the Secret with its credentials. " +
				"petfabric's webhook pre-creates a PersistentVolume for every pet of a StatefulSet whose claims use it.",
			Run: stepStorageClass},
		{Name: "service", Title: "The headless Service",
			Say: "Pets get stable DNS names through a headless Service.",
			Run: stepService},
		{Name: "statefulset", Title: "A StatefulSet of 2 pets",
			Say: "The blog's PetSet, as an apps/v1 StatefulSet with 2 replicas and a claim template of the class. The webhook " +
				"creates a Datera volume and a PersistentVolume per pet; the extender places each pet on a node that reaches " +
				"the volume's portals; kubelet mounts the volume through the FlexVolume driver.",
			Run: stepStatefulSet},
		{Name: "scale", Title: "Scale to 3 with kubectl patch",
			Say: "Scaling the set up: the webhook sees the scale and makes the third pet's volume before its claim exists.",
			Run: stepScale},
		{Name: "unreachable", Title: "No pet on the node that cannot reach the storage",
			Say: "node-2's agent probes the portal and fails (its network has no route to it: an 'unreachable' route on this " +
				"host for the address node-2 is given). With node-0 and node-1 cordoned, a re-created pet has only node-2 " +
				"left, and the scheduler's event says why it waits; uncordoned, the pet returns to a node that reaches the portal.",
			Run: stepUnreachable},
		{Name: "mounts", Title: "kubelet's mounts, the driver's log and Datera's ACL",
			Say: "Each pet's volume is mounted by kubelet through the driver (the mount table and the driver's log), and " +
				"Datera's ACL lists exactly the node the pet runs on (the simulator's API, and tgtd's own view of the target). " +
				"This kernel has no iscsi_tcp, so the driver's initiator is a stand-in that attaches the target's file as a loop " +
				"device (hence /dev/loopN), refusing nodes outside the same ACL; tgtd exports that file as a real target, which " +
				"the agents' probes log in to.",
			Run: stepMounts},
		{Name: "move", Title: "Move a pet to the other node",
			Say: "A pet is written to, its node cordoned and the pet deleted: the old node unmounts and leaves the ACL, the new " +
				"node joins it and mounts the same data. (The fake CRI runs no container, so the demo writes into the directory " +
				"kubelet mounted, as the pet's container would.)",
			Run: stepMove},
		{Name: "recreate", Title: "Delete and re-create the StatefulSet",
			Say: "Deleting the StatefulSet keeps its claims: re-created, the pets get the same volumes and data back.",
			Run: stepRecreate},
		{Name: "cleanup", Title: "Reclaim Delete",
			Say: "Deleting the claims releases the PersistentVolumes; the class's reclaim policy Delete makes petfabric remove " +
				"the Datera volumes and the PersistentVolumes.",
			Run: stepCleanup},
	}
}

// StepNamed returns the step called name.
func StepNamed(name string) Step {
	for _, s := range Steps() {
		if s.Name == name {
			return s
		}
	}
	panic("no walkthrough step " + name)
}

func (w *Walk) kubectl(o *Observed, stdin string, args ...string) error {
	out, err := w.Env.Cluster.KubectlInput(stdin, args...)
	cmd := "kubectl " + strings.Join(args, " ")
	if stdin != "" {
		cmd += " <<EOF\n" + strings.TrimRight(stdin, "\n") + "\nEOF"
	}
	o.show(cmd, out)
	return err
}

func storageClassYAML(e *Env) string {
	return fmt.Sprintf(`apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: %s
provisioner: petfabric.io/datera
parameters:
  backstoreServer: "%s"
  replica: "1"
  fsType: xfs
  secretName: %s
  secretNamespace: %s
reclaimPolicy: Delete
volumeBindingMode: Immediate
`, WalkClass, e.Backstore, CredentialsSecret, Namespace)
}

const serviceYAML = `apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: blog
  labels: {app: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports:
    - {name: db, port: 26257}
`

const statefulSetYAML = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: blog
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels: {app: db}
      containers:
        - name: db
          image: registry.example/db:1
          ports:
            - {name: db, containerPort: 26257}
          volumeMounts:
            - {name: data, mountPath: /var/lib/db}
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        storageClassName: datera-gold
        accessModes: [ReadWriteOnce]
        resources:
          requests:
            storage: 1Gi
`

func stepStorageClass(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{}
	if err := w.kubectl(o, storageClassYAML(w.Env), "apply", "-f", "-"); err != nil {
		return o, err
	}
	return o, w.kubectl(o, "", "get", "storageclass")
}

func stepService(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{}
	if err := w.kubectl(o, "", "create", "namespace", WalkNamespace); err != nil {
		return o, err
	}
	if err := w.kubectl(o, serviceYAML, "apply", "-f", "-"); err != nil {
		return o, err
	}
	return o, w.kubectl(o, "", "get", "service", "-n", WalkNamespace)
}

func stepStatefulSet(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{}
	if err := w.kubectl(o, statefulSetYAML, "apply", "-f", "-"); err != nil {
		return o, err
	}
	if err := w.waitRunning(ctx, 2, nil, 3*time.Minute); err != nil {
		return o, err
	}
	return o, w.showState(ctx, o, true)
}

func stepScale(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{}
	if err := w.kubectl(o, "", "patch", "statefulset", WalkSet, "-n", WalkNamespace, "--type=merge", "-p", `{"spec":{"replicas":3}}`); err != nil {
		return o, err
	}
	if err := w.waitRunning(ctx, 3, nil, 3*time.Minute); err != nil {
		return o, err
	}
	return o, w.showState(ctx, o, false)
}

// showState prints and records the PVs, claims, pods and Datera app_instances.
func (w *Walk) showState(ctx context.Context, o *Observed, first bool) error {
	if err := w.kubectl(o, "", "get", "pv"); err != nil {
		return err
	}
	if first && w.FirstPV.IsZero() {
		w.FirstPV = time.Now()
	}
	for _, args := range [][]string{{"get", "pvc", "-n", WalkNamespace}, {"get", "pods", "-n", WalkNamespace, "-o", "wide"}} {
		if err := w.kubectl(o, "", args...); err != nil {
			return err
		}
	}
	return w.observe(ctx, o)
}

// observe fills o's pets, PVs, app_instances and tgtd targets.
func (w *Walk) observe(ctx context.Context, o *Observed) error {
	var err error
	if o.Pets, err = w.pets(ctx); err != nil {
		return err
	}
	pvs, err := w.Env.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	o.PVs = pvs.Items
	if o.AppInstances, err = w.Env.AppInstances(ctx); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-40s %-7s %-10s %s\n", "NAME", "ADMIN", "OP_STATE", "ACL")
	for _, ai := range o.AppInstances {
		fmt.Fprintf(&b, "%-40s %-7s %-10s %s\n", ai.Name, ai.AdminState, ai.OpState, strings.Join(ai.ACL, ","))
	}
	o.show("curl "+w.Env.SimURL+"/v2.2/app_instances   # the Datera API (simulator)", b.String())
	o.Targets, err = w.Env.TgtTargets(ctx)
	return err
}

// pets lists the set's pods with their claims, volumes and mounts, by name.
func (w *Walk) pets(ctx context.Context) ([]Pet, error) {
	cs := w.Env.Client
	pods, err := cs.CoreV1().Pods(WalkNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + WalkSet})
	if err != nil {
		return nil, err
	}
	var out []Pet
	for _, p := range pods.Items {
		pet := Pet{Name: p.Name, Node: p.Spec.NodeName, Phase: string(p.Status.Phase), UID: string(p.UID), Claim: WalkClaim + "-" + p.Name}
		if pvc, err := cs.CoreV1().PersistentVolumeClaims(WalkNamespace).Get(ctx, pet.Claim, metav1.GetOptions{}); err == nil {
			pet.PV = pvc.Spec.VolumeName
		}
		if pet.PV != "" {
			if pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, pet.PV, metav1.GetOptions{}); err == nil && pv.Spec.FlexVolume != nil {
				pet.VolumeID = pv.Spec.FlexVolume.Options["volumeID"]
			}
		}
		if n := w.Env.Node(pet.Node); n != nil && n.Kubelet != nil && pet.PV != "" {
			pet.MountDir = n.Kubelet.PodVolumeDir(pet.UID, PluginDir, pet.PV)
			pet.MountLine = mountLine(pet.MountDir)
			pet.DriverLine = driverReply(n.LogFile, "mount", pet.MountDir)
		}
		out = append(out, pet)
	}
	slices.SortFunc(out, func(a, b Pet) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// waitRunning waits until the set has n pets Running (a pet in notUID counts only once
// re-created with another UID).
func (w *Walk) waitRunning(ctx context.Context, n int, notUID map[string]string, timeout time.Duration) error {
	var last []Pet
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pets, err := w.pets(ctx)
		if err != nil {
			return false, nil
		}
		last = pets
		running := 0
		for _, p := range pets {
			if p.Phase == string(corev1.PodRunning) && p.MountLine != "" && (notUID == nil || notUID[p.Name] != p.UID) {
				running++
			}
		}
		return running == n, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %d pets Running with their volume mounted: %w (last: %+v)", n, err, last)
	}
	return nil
}

func stepUnreachable(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{Reports: map[string][]string{}}
	var b strings.Builder
	for _, n := range w.Env.Nodes {
		l, err := w.Env.Client.CoordinationV1().Leases(Namespace).Get(ctx, placement.LeaseName(n.Name), metav1.GetOptions{})
		if err != nil {
			return o, err
		}
		nr, ok := placement.NodeReportFromLease(l)
		if !ok {
			return o, fmt.Errorf("node %s: report Lease %s has no valid report", n.Name, l.Name)
		}
		for bs, r := range nr.Report.Backstores {
			for portal, pr := range r.Portals {
				v := portal + " reachable"
				if !pr.OK {
					v = portal + " UNREACHABLE: " + pr.Error
				}
				o.Reports[n.Name] = append(o.Reports[n.Name], v)
				fmt.Fprintf(&b, "%s  backstore %s  portal %s\n", n.Name, bs, v)
			}
		}
	}
	o.show("kubectl get lease -n "+Namespace+" -l app.kubernetes.io/component=node-agent   # the agents' reports (annotation petfabric.io/report)", b.String())
	if err := w.kubectl(o, "", "get", "pods", "-n", WalkNamespace, "-o", "wide"); err != nil {
		return o, err
	}
	pets, err := w.pets(ctx)
	if err != nil {
		return o, err
	}
	victim := pets[len(pets)-1]
	reachable := []string{}
	for _, n := range w.Env.Nodes {
		if n.Reachable {
			reachable = append(reachable, n.Name)
		}
	}
	if err := w.kubectl(o, "", append([]string{"cordon"}, reachable...)...); err != nil {
		return o, err
	}
	uncordon := func() error { return w.kubectl(o, "", append([]string{"uncordon"}, reachable...)...) }
	if err := w.kubectl(o, "", "delete", "pod", "-n", WalkNamespace, victim.Name, "--wait=true"); err != nil {
		return o, errors.Join(err, uncordon())
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		evs, err := w.Env.Client.CoreV1().Events(WalkNamespace).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + victim.Name + ",reason=FailedScheduling"})
		if err != nil {
			return false, nil
		}
		// The extender's reason for the unreachable node; a retry's event can say something
		// else for a moment (a report renewed late on a loaded machine reads as stale), so
		// wait for the one this step is about.
		for _, ev := range evs.Items {
			if ev.InvolvedObject.UID != "" && string(ev.InvolvedObject.UID) != victim.UID {
				o.SchedulerEvent = ev.Message
				if strings.Contains(ev.Message, "cannot reach portal") {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return o, errors.Join(fmt.Errorf("no FailedScheduling event naming the unreachable portal for the re-created %s (last event: %q): %w", victim.Name, o.SchedulerEvent, err), uncordon())
	}
	o.show("kubectl get events -n "+WalkNamespace+" --field-selector involvedObject.name="+victim.Name+",reason=FailedScheduling",
		"FailedScheduling  pod/"+victim.Name+"  "+o.SchedulerEvent+"\n")
	if err := uncordon(); err != nil {
		return o, err
	}
	if err := w.waitRunning(ctx, 3, map[string]string{victim.Name: victim.UID}, 2*time.Minute); err != nil {
		return o, err
	}
	if err := w.kubectl(o, "", "get", "pods", "-n", WalkNamespace, "-o", "wide"); err != nil {
		return o, err
	}
	o.Pets, err = w.pets(ctx)
	return o, err
}

func stepMounts(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{}
	if err := w.observe(ctx, o); err != nil {
		return o, err
	}
	for _, p := range o.Pets {
		ai := findAI(o.AppInstances, p.VolumeID)
		o.show(fmt.Sprintf("# %s on %s: grep %s /proc/self/mountinfo", p.Name, p.Node, p.MountDir), p.MountLine+"\n")
		o.show(fmt.Sprintf("# %s: the driver's log on %s (kubelet's mount call, reply)", p.Name, p.Node), p.DriverLine+"\n")
		if ai != nil {
			o.show(fmt.Sprintf("# %s: Datera app_instance %s", p.Name, ai.Name),
				fmt.Sprintf("admin_state=%s op_state=%s target=%s acl=%s\n", ai.AdminState, ai.OpState, ai.IQN, strings.Join(ai.ACL, ",")))
			tgt, err := w.Env.TgtShow(ctx, ai.IQN)
			if err != nil {
				return o, err
			}
			o.show(fmt.Sprintf("tgtadm -C %d --lld iscsi --mode target --op show   # %s's target", w.Env.TgtControlPort, p.Name), aclSection(tgt))
		}
	}
	return o, nil
}

// aclSection is the "ACL information" part of tgtadm's target description, with its name.
func aclSection(show string) string {
	lines := splitLines(show)
	var out []string
	if len(lines) > 0 {
		out = append(out, lines[0])
	}
	in := false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "ACL information") {
			in = true
		} else if in && !strings.HasPrefix(l, "        ") {
			in = false
		}
		if in {
			out = append(out, l)
		}
	}
	return joinLines(out) + "\n"
}

func findAI(ais []AppInstance, name string) *AppInstance {
	for i := range ais {
		if ais[i].Name == name {
			return &ais[i]
		}
	}
	return nil
}

func stepMove(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{}
	pets, err := w.pets(ctx)
	if err != nil {
		return o, err
	}
	// Move the first pet that is alone on its node, to the other reachable node.
	count := map[string]int{}
	for _, p := range pets {
		count[p.Node]++
	}
	var pet Pet
	for _, p := range pets {
		if count[p.Node] == 1 {
			pet = p
			break
		}
	}
	if pet.Name == "" {
		pet = pets[0]
	}
	var to string
	for _, n := range w.Env.Nodes {
		if n.Reachable && n.Name != pet.Node {
			to = n.Name
		}
	}
	m := &Move{Pet: pet.Name, From: pet.Node, To: to, OldMountDir: pet.MountDir,
		FromInitiator: w.Env.Node(pet.Node).Initiator, ToIni: w.Env.Node(to).Initiator}
	o.Move = m
	m.Marker = fmt.Sprintf("written by %s on %s at %s", pet.Name, pet.Node, time.Now().UTC().Format(time.RFC3339Nano))
	if err := writeSynced(filepath.Join(pet.MountDir, "marker"), m.Marker); err != nil {
		return o, err
	}
	w.markers[pet.Name] = m.Marker
	o.show(fmt.Sprintf("echo ... > %s/marker   # as %s's container would", pet.MountDir, pet.Name), m.Marker+"\n")
	ais, err := w.Env.AppInstances(ctx)
	if err != nil {
		return o, err
	}
	ai := findAI(ais, pet.VolumeID)
	if ai == nil {
		return o, fmt.Errorf("no app_instance %s", pet.VolumeID)
	}
	m.ACLBefore = ai.ACL
	since := time.Now()
	if err := w.kubectl(o, "", "cordon", pet.Node); err != nil {
		return o, err
	}
	if err := w.kubectl(o, "", "delete", "pod", "-n", WalkNamespace, pet.Name, "--wait=true"); err != nil {
		return o, errors.Join(err, w.kubectl(o, "", "uncordon", pet.Node))
	}
	err = w.waitRunning(ctx, len(pets), map[string]string{pet.Name: pet.UID}, 2*time.Minute)
	if uerr := w.kubectl(o, "", "uncordon", pet.Node); err == nil {
		err = uerr
	}
	if err != nil {
		return o, err
	}
	if err := w.kubectl(o, "", "get", "pods", "-n", WalkNamespace, "-o", "wide"); err != nil {
		return o, err
	}
	now, err := w.pets(ctx)
	if err != nil {
		return o, err
	}
	for _, p := range now {
		if p.Name == pet.Name {
			m.To = p.Node
			m.NewMountLine = p.MountLine
			b, err := os.ReadFile(filepath.Join(p.MountDir, "marker"))
			if err != nil {
				return o, fmt.Errorf("read the marker back on %s: %w", p.Node, err)
			}
			m.ReadBack = string(b)
			o.show(fmt.Sprintf("# %s on %s now: grep %s /proc/self/mountinfo", p.Name, p.Node, p.MountDir), p.MountLine+"\n")
			o.show(fmt.Sprintf("cat %s/marker", p.MountDir), m.ReadBack+"\n")
		}
	}
	m.OldStillMounted = mountLine(m.OldMountDir) != ""
	o.show(fmt.Sprintf("# on %s: grep %s /proc/self/mountinfo", m.From, m.OldMountDir), mountLine(m.OldMountDir)+"(nothing: unmounted)\n")
	if ais, err = w.Env.AppInstances(ctx); err != nil {
		return o, err
	}
	if ai = findAI(ais, pet.VolumeID); ai == nil {
		return o, fmt.Errorf("app_instance %s gone", pet.VolumeID)
	}
	m.ACLAfter = ai.ACL
	m.History = w.Env.ACLHistory(ai.IQN, since)
	var h strings.Builder
	for _, c := range m.History {
		fmt.Fprintf(&h, "%s  acl=[%s]\n", c.At.Format("15:04:05.000"), strings.Join(c.Initiators, ","))
	}
	o.show(fmt.Sprintf("# Datera ACL of %s: before %v, after %v; the simulator's ACL changes meanwhile:", ai.Name, m.ACLBefore, m.ACLAfter), h.String())
	return o, nil
}

func stepRecreate(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{PVsBefore: map[string]string{}, DataBack: map[string]string{}}
	pets, err := w.pets(ctx)
	if err != nil {
		return o, err
	}
	for _, p := range pets {
		o.PVsBefore[p.Claim] = p.PV
		if _, ok := w.markers[p.Name]; !ok {
			w.markers[p.Name] = fmt.Sprintf("written by %s on %s before the set was deleted", p.Name, p.Node)
			if err := writeSynced(filepath.Join(p.MountDir, "marker"), w.markers[p.Name]); err != nil {
				return o, err
			}
		}
	}
	if err := w.deleteSet(ctx, o); err != nil {
		return o, err
	}
	scaled := strings.Replace(statefulSetYAML, "replicas: 2", fmt.Sprintf("replicas: %d", len(pets)), 1)
	if err := w.kubectl(o, scaled, "apply", "-f", "-"); err != nil {
		return o, err
	}
	if err := w.waitRunning(ctx, len(pets), nil, 3*time.Minute); err != nil {
		return o, err
	}
	if err := w.showState(ctx, o, false); err != nil {
		return o, err
	}
	for _, p := range o.Pets {
		b, err := os.ReadFile(filepath.Join(p.MountDir, "marker"))
		if err != nil {
			return o, fmt.Errorf("%s: read the marker back: %w", p.Name, err)
		}
		o.DataBack[p.Name] = string(b)
	}
	return o, nil
}

// deleteSet deletes the walkthrough's StatefulSet (shown as a kubectl command) and waits until
// its pets are gone.
func (w *Walk) deleteSet(ctx context.Context, o *Observed) error {
	if err := w.kubectl(o, "", "delete", "statefulset", "-n", WalkNamespace, WalkSet, "--wait=true"); err != nil {
		return err
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := w.pets(ctx)
		return err == nil && len(p) == 0, nil
	}); err != nil {
		return fmt.Errorf("pets not gone after the StatefulSet was deleted: %w", err)
	}
	return nil
}

// Marker is the text written into pet's volume by the move and re-create steps.
func (w *Walk) Marker(pet string) string { return w.markers[pet] }

func stepCleanup(ctx context.Context, w *Walk) (*Observed, error) {
	o := &Observed{}
	pets, err := w.pets(ctx)
	if err != nil {
		return o, err
	}
	if err := w.deleteSet(ctx, o); err != nil {
		return o, err
	}
	args := []string{"delete", "pvc", "-n", WalkNamespace, "--wait=true"}
	for _, p := range pets {
		args = append(args, p.Claim)
	}
	if err := w.kubectl(o, "", args...); err != nil {
		return o, err
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pvs, err := w.Env.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ais, err := w.Env.AppInstances(ctx)
		return err == nil && len(pvs.Items) == 0 && len(ais) == 0, nil
	})
	if oerr := w.observe(ctx, o); oerr != nil {
		return o, oerr
	}
	if err != nil {
		return o, fmt.Errorf("reclaim Delete: PVs %d and app_instances %d left: %w", len(o.PVs), len(o.AppInstances), err)
	}
	for _, args := range [][]string{{"delete", "namespace", WalkNamespace, "--wait=true"}, {"delete", "storageclass", WalkClass}} {
		if err := w.kubectl(o, "", args...); err != nil {
			return o, err
		}
	}
	return o, w.kubectl(o, "", "get", "pv")
}

// writeSynced writes text to path and fsyncs it.
func writeSynced(path, text string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mountLine is the /proc/self/mountinfo line of the mount at dir ("" when none).
func mountLine(dir string) string {
	if dir == "" {
		return ""
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	last := ""
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && fields[4] == dir {
			last = s.Text()
		}
	}
	return last
}

// driverReply is the driver log's reply line to the last call of verb on dir ("" when none).
func driverReply(logFile, verb, dir string) string {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	type entry struct {
		Msg  string   `json:"msg"`
		Verb string   `json:"verb"`
		PID  int      `json:"pid"`
		Args []string `json:"args"`
	}
	pid, reply := 0, ""
	for _, line := range bytes.Split(b, []byte("\n")) {
		var le entry
		if json.Unmarshal(line, &le) != nil {
			continue
		}
		switch {
		case le.Msg == "call" && le.Verb == verb && len(le.Args) > 0 && le.Args[0] == dir:
			pid, reply = le.PID, ""
		case le.Msg == "reply" && le.PID == pid && pid != 0:
			reply = string(line)
		}
	}
	return reply
}

// AppInstances lists the simulator's app_instances through its API (login, GET
// /v2.2/app_instances), as a Datera administrator would.
func (e *Env) AppInstances(ctx context.Context) ([]AppInstance, error) {
	login, _ := json.Marshal(map[string]string{"name": DateraUser, "password": DateraPassword})
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, e.SimURL+"/v2.2/login", bytes.NewReader(login))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	var tok struct {
		Key string `json:"key"`
	}
	if err := doJSON(req, &tok); err != nil {
		return nil, fmt.Errorf("datera login: %w", err)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, e.SimURL+"/v2.2/app_instances", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Auth-Token", tok.Key)
	var list struct {
		Data []struct {
			Name             string `json:"name"`
			AdminState       string `json:"admin_state"`
			StorageInstances []struct {
				OpState string `json:"op_state"`
				Access  struct {
					IQN string `json:"iqn"`
				} `json:"access"`
				ACL struct {
					Initiators []struct {
						Path string `json:"path"`
					} `json:"initiators"`
				} `json:"acl_policy"`
			} `json:"storage_instances"`
		} `json:"data"`
	}
	if err := doJSON(req, &list); err != nil {
		return nil, fmt.Errorf("list app_instances: %w", err)
	}
	var out []AppInstance
	for _, d := range list.Data {
		ai := AppInstance{Name: d.Name, AdminState: d.AdminState}
		for _, si := range d.StorageInstances {
			ai.OpState, ai.IQN = si.OpState, si.Access.IQN
			for _, in := range si.ACL.Initiators {
				ai.ACL = append(ai.ACL, strings.TrimPrefix(in.Path, "/initiators/"))
			}
		}
		out = append(out, ai)
	}
	slices.SortFunc(out, func(a, b AppInstance) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func doJSON(req *http.Request, into any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d", req.Method, req.URL.Path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
