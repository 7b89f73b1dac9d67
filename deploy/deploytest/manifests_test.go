package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/agentwire/agentwire/internal/config"
)

// manifests is every object of a directory's YAML files, strictly decoded.
type manifests struct {
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	serviceMonitors []*monitoringv1.ServiceMonitor
	kustomizations  []*kustomization
	files           map[string][]string // file → "Kind/name" of its objects
}

// kustomization is the part of kustomize's Kustomization these manifests
// use; a field outside it is an error, as for the API types.
type kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Resources       []string `json:"resources"`
	Images          []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// readManifests decodes every *.yaml under dir (and its subdirectories when
// recursive). Each document must be an API object whose apiVersion and kind
// deploytest knows, with no field its Go type lacks.
func readManifests(t *testing.T, dir string, recursive bool) *manifests {
	t.Helper()
	m := &manifests{files: map[string][]string{}}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		if filepath.Ext(p) == ".yml" {
			return fmt.Errorf("%s: name it .yaml, like the others", p)
		}
		if filepath.Ext(p) != ".yaml" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		for i, doc := range splitYAML(b) {
			name, err := m.add(doc)
			if err != nil {
				return fmt.Errorf("%s, document %d: %w", p, i+1, err)
			}
			if name != "" {
				m.files[rel] = append(m.files[rel], name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// splitYAML splits a multi-document YAML file at its "---" lines.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if strings.TrimRight(string(line), " \r\n") == "---" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(docs, cur.Bytes())
}

// add decodes one document strictly into the type its apiVersion and kind
// name; "" for a document of only comments.
func (m *manifests) add(doc []byte) (string, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", err
	}
	if tm.APIVersion == "" && tm.Kind == "" {
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil || v != nil {
			return "", errors.New("a document without apiVersion and kind")
		}
		return "", nil
	}
	// As the API server decodes: field names case-sensitive, no unknown or
	// duplicate field (encoding/json alone would take "targetport" for
	// "targetPort").
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return "", err
	}
	strict := func(obj any) error {
		strictErrs, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
		if err != nil {
			return err
		}
		return errors.Join(strictErrs...)
	}
	var name string
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		name, err = decodeAs(strict, &m.deployments)
	case "apps/v1 StatefulSet":
		name, err = decodeAs(strict, &m.statefulSets)
	case "v1 Service":
		name, err = decodeAs(strict, &m.services)
	case "v1 ConfigMap":
		name, err = decodeAs(strict, &m.configMaps)
	case "v1 Secret":
		name, err = decodeAs(strict, &m.secrets)
	case "policy/v1 PodDisruptionBudget":
		name, err = decodeAs(strict, &m.pdbs)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		name, err = decodeAs(strict, &m.hpas)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		name, err = decodeAs(strict, &m.serviceMonitors)
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		o := &kustomization{}
		if err := strict(o); err != nil {
			return "", err
		}
		m.kustomizations = append(m.kustomizations, o)
		return "Kustomization", nil
	default:
		return "", fmt.Errorf("apiVersion %q kind %q: deploytest cannot validate it (add its Go type)", tm.APIVersion, tm.Kind)
	}
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	return tm.Kind + "/" + name, nil
}

// decodeAs decodes into a new object of the list's type and appends it.
func decodeAs[T any, P interface {
	*T
	GetName() string
}](strict func(any) error, list *[]P) (string, error) {
	o := P(new(T))
	if err := strict(o); err != nil {
		return "", err
	}
	*list = append(*list, o)
	return o.GetName(), nil
}

// TestStrictDecodingRejectsUnknownFields shows the validation can fail: a
// misspelt or misplaced field is an error, not silently dropped.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      terminationGracePeriod: 40\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80, targetport: http}]\n",
		"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  endpoints: [{port: http, metricsPath: /metrics}]\n",
		"apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\nspec:\n  scaleTargetRef: {kind: Deployment, name: x}\n  maxReplicas: 3\n  targetCPUUtilizationPercentage: 70\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
	} {
		if _, err := new(manifests).add([]byte(doc)); err == nil {
			t.Errorf("accepted:\n%s", doc)
		}
	}
}

// serveVariables is every AGENTWIRE_… variable `agentwire serve` reads,
// from its own help.
func serveVariables(t *testing.T) map[string]bool {
	t.Helper()
	_, err := config.Load([]string{"-h"}, func(string) string { return "" })
	var help *config.HelpError
	if !errors.As(err, &help) {
		t.Fatalf("serve -h: %v", err)
	}
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[(AGENTWIRE_[A-Z0-9_]+)\]`).FindAllStringSubmatch(help.Usage, -1) {
		vars[m[1]] = true
	}
	if len(vars) < 20 {
		t.Fatalf("found %d variables in serve -h", len(vars))
	}
	return vars
}

// drainBound is how long a node may take from SIGTERM to exit: running runs
// finish within --drain-timeout, the streams settle (at most 2 s, see
// ARCHITECTURE.md, "Lifecycle order"), sockets and HTTP close within
// --shutdown-timeout.
func drainBound(c config.Config) time.Duration {
	return c.DrainTimeout + 2*time.Second + c.ShutdownTimeout
}

// TestKubernetesManifests decodes deploy/k8s strictly and checks that its
// objects fit together and fit agentwire.
func TestKubernetesManifests(t *testing.T) {
	im := readImage(t)
	vars := serveVariables(t)
	m := readManifests(t, "../k8s", false)
	examples := readManifests(t, "../k8s/examples", true)

	if len(m.deployments) != 1 || len(m.services) != 1 || len(m.pdbs) != 1 || len(m.hpas) != 1 || len(m.serviceMonitors) != 1 || len(m.configMaps) != 1 || len(m.secrets) != 1 || len(m.kustomizations) != 1 {
		t.Fatalf("deploy/k8s: want one each of Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler, ServiceMonitor, ConfigMap, Secret (the example) and Kustomization; have %v", m.files)
	}
	dep, svc, pdb, hpa, sm, secret := m.deployments[0], m.services[0], m.pdbs[0], m.hpas[0], m.serviceMonitors[0], m.secrets[0]
	pod := dep.Spec.Template.Spec
	podLabels := labels.Set(dep.Spec.Template.Labels)

	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("Deployment: selector %v does not select its pods %v (%v)", dep.Spec.Selector, podLabels, err)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("Deployment: %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The image, as the Dockerfile builds it.
	ref := c.Image
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	if _, tag, ok := strings.Cut(ref, ":"); !strings.Contains(ref, "@sha256:") && (!ok || tag == "" || tag == "latest") {
		t.Errorf("container image %q: want a tag or digest other than latest", c.Image)
	}
	if len(c.Command) > 0 {
		t.Errorf("container command %q: leave it to the image's ENTRYPOINT %q", c.Command, im.entrypoint)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("container args %q: want serve first", c.Args)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if fmt.Sprint(ports["http"]) != strings.Join(im.expose, " ") {
		t.Errorf("container port http %d, want the image's EXPOSE %v", ports["http"], im.expose)
	}
	portOf := func(p intstr.IntOrString) int32 {
		if p.Type == intstr.String {
			return ports[p.StrVal]
		}
		return p.IntVal
	}

	// Probes.
	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe of %s", name, path)
			return
		}
		if p.HTTPGet.Path != path || portOf(p.HTTPGet.Port) != ports["http"] {
			t.Errorf("%s: GET %s on port %v, want %s on the http port", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
		}
		// /readyz bounds each check by 2 s; the kubelet's default is 1 s.
		if p.TimeoutSeconds <= 2 {
			t.Errorf("%s: timeoutSeconds %d, want more than /readyz's 2 s check bound", name, p.TimeoutSeconds)
		}
	}
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("livenessProbe", c.LivenessProbe, "/healthz")

	// Security.
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext: want runAsNonRoot: true")
	}
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != int64(im.uid) || psc.RunAsGroup == nil || *psc.RunAsGroup != int64(im.gid) {
		t.Errorf("pod securityContext: want runAsUser %d and runAsGroup %d, the image's USER", im.uid, im.gid)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Error("container securityContext: want readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: drop [ALL], add none")
	}

	// The environment the container gets: the image's, then envFrom, then
	// env. Values from a Secret are not fed to serve (the example's are
	// placeholders); every AGENTWIRE_… name must be one of serve's
	// variables (others, OTEL_… say, are read by libraries).
	env := map[string]string{}
	for k, v := range im.env {
		env[k] = v
	}
	fromSecret := map[string]bool{}
	configMap := func(name string) *corev1.ConfigMap {
		for _, cm := range m.configMaps {
			if cm.Name == name {
				return cm
			}
		}
		t.Errorf("container: ConfigMap %q is not in deploy/k8s", name)
		return &corev1.ConfigMap{}
	}
	secretKeys := func(name string) map[string]string {
		if secret.Name != name {
			t.Errorf("container: Secret %q: the example Secret is %q", name, secret.Name)
		}
		return secret.StringData
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			for k, v := range configMap(ef.ConfigMapRef.Name).Data {
				env[k] = v
			}
		case ef.SecretRef != nil:
			for k := range secretKeys(ef.SecretRef.Name) {
				fromSecret[k] = true
				delete(env, k)
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			env[e.Name] = configMap(e.ValueFrom.ConfigMapKeyRef.Name).Data[e.ValueFrom.ConfigMapKeyRef.Key]
		case e.ValueFrom.SecretKeyRef != nil:
			if _, ok := secretKeys(e.ValueFrom.SecretKeyRef.Name)[e.ValueFrom.SecretKeyRef.Key]; !ok {
				t.Errorf("env %s: the example Secret has no key %q", e.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			fromSecret[e.Name] = true
			delete(env, e.Name)
		}
	}
	for k := range env {
		if strings.HasPrefix(k, "AGENTWIRE_") && !vars[k] {
			t.Errorf("container env %s: not a variable of agentwire serve (a typo is silently ignored)", k)
		}
	}
	for k := range fromSecret {
		if strings.HasPrefix(k, "AGENTWIRE_") && !vars[k] {
			t.Errorf("Secret key %s: not a variable of agentwire serve", k)
		}
	}
	cfg, err := config.Load(c.Args[1:], func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("serve with the container's args and environment: %v", err)
	}

	if cfg.Dev {
		t.Error("the Deployment runs with --dev: dev-login would issue a token for any user")
	}

	// Many nodes share one Redis, one PostgreSQL and one JWT key.
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
		t.Errorf("HorizontalPodAutoscaler: minReplicas %v, want at least 2 so a drain never empties the service", hpa.Spec.MinReplicas)
	}
	set := func(k string) bool { return env[k] != "" || fromSecret[k] }
	for _, k := range []string{"AGENTWIRE_REDIS_URL", "AGENTWIRE_DATABASE_URL"} {
		if !set(k) {
			t.Errorf("many nodes need %s", k)
		}
	}
	if !set("AGENTWIRE_JWT_SECRET") && !set("AGENTWIRE_JWT_PUBLIC_KEY_FILE") && !set("AGENTWIRE_JWKS_URL") {
		t.Error("many nodes need one JWT key: each node would generate its own secret")
	}
	if dep.Spec.Replicas != nil {
		t.Errorf("Deployment: replicas %d: the HorizontalPodAutoscaler owns the count (every apply would reset it)", *dep.Spec.Replicas)
	}

	// A read-only root: the data dir and /tmp must be volumes.
	mounts := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = true
	}
	for _, p := range []string{cfg.Keys.DataDir, "/tmp"} {
		if !mounts[p] {
			t.Errorf("container: %s is not a volume, and the root filesystem is read-only", p)
		}
	}

	// Stopping: preStop, then SIGTERM and the drain, all within the grace.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Fatal("container: want lifecycle.preStop.sleep (the image has no shell for an exec hook) so load balancers drop the pod before it drains")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	need := preStop + drainBound(cfg)
	grace := 30 * time.Second // Kubernetes' default
	if g := pod.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v: want more than preStop %v + --drain-timeout %v + 2 s + --shutdown-timeout %v = %v",
			grace, preStop, cfg.DrainTimeout, cfg.ShutdownTimeout, need)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Error("Deployment: want rollingUpdate.maxUnavailable 0: a rollout adds a node before draining one")
	}

	// The Service, the PodDisruptionBudget, the HPA and the ServiceMonitor
	// all point at these pods.
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service: selector %v does not select the pods %v", svc.Spec.Selector, podLabels)
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = true
		if portOf(p.TargetPort) != ports["http"] {
			t.Errorf("Service port %s: targetPort %s is not the container's http port", p.Name, p.TargetPort.String())
		}
	}
	if s, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || s.Empty() || !s.Matches(podLabels) {
		t.Errorf("PodDisruptionBudget: selector %v does not select the pods", pdb.Spec.Selector)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() < 1 {
		t.Error("PodDisruptionBudget: want maxUnavailable of at least 1 (a node drain must be able to proceed)")
	}
	if r := hpa.Spec.ScaleTargetRef; r.APIVersion != "apps/v1" || r.Kind != "Deployment" || r.Name != dep.Name {
		t.Errorf("HorizontalPodAutoscaler: scaleTargetRef %+v, want the Deployment %s", r, dep.Name)
	}
	if hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas || len(hpa.Spec.Metrics) == 0 {
		t.Error("HorizontalPodAutoscaler: want maxReplicas ≥ minReplicas and a metric")
	}
	for _, mt := range hpa.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil {
			if _, ok := c.Resources.Requests[mt.Resource.Name]; !ok && mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
				t.Errorf("HorizontalPodAutoscaler: %s utilization needs a %s request on the container", mt.Resource.Name, mt.Resource.Name)
			}
		}
	}
	if s, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector); err != nil || s.Empty() || !s.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor: selector %v does not select the Service's labels %v", sm.Spec.Selector, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor: %d endpoints, want 1", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if !svcPorts[ep.Port] || ep.Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoint: port %q path %q, want a Service port and /metrics", ep.Port, ep.Path)
	}
	iv, err1 := time.ParseDuration(string(ep.Interval))
	to, err2 := time.ParseDuration(string(ep.ScrapeTimeout))
	if err1 != nil || err2 != nil || to > iv {
		t.Errorf("ServiceMonitor endpoint: interval %q, scrapeTimeout %q: want durations, the timeout within the interval", ep.Interval, ep.ScrapeTimeout)
	}

	// The example Secret must not run as it is.
	placeholder := map[string]string{}
	for k, v := range env {
		placeholder[k] = v
	}
	for k, v := range secret.StringData {
		placeholder[k] = v
	}
	if len(secret.Data) > 0 {
		t.Error("the example Secret: use stringData, so the placeholders are readable")
	}
	if _, err := config.Load(c.Args[1:], func(k string) string { return placeholder[k] }); err == nil {
		t.Error("serve accepts the example Secret's placeholders: make them values it refuses, so the example cannot be deployed by mistake")
	}

	// kustomization.yaml lists every manifest but the example Secret.
	k := m.kustomizations[0]
	for file, objs := range m.files {
		listed := slices.Contains(k.Resources, file)
		switch {
		case file == "kustomization.yaml":
		case slices.Contains(objs, "Secret/"+secret.Name):
			if listed {
				t.Errorf("kustomization.yaml lists %s: the example Secret holds placeholders; the operator creates the real one", file)
			}
		case !listed:
			t.Errorf("kustomization.yaml does not list %s", file)
		}
	}
	for _, r := range k.Resources {
		if _, ok := m.files[r]; !ok {
			t.Errorf("kustomization.yaml lists %s, which holds no object here", r)
		}
	}
	for _, img := range k.Images {
		if !strings.HasPrefix(c.Image, img.Name+":") && !strings.HasPrefix(c.Image, img.Name+"@") {
			t.Errorf("kustomization.yaml: image %q is not the container's image %q", img.Name, c.Image)
		}
	}

	checkDatastores(t, examples, secret)
}

// checkDatastores checks the example Redis and PostgreSQL: persistent,
// non-root, and reachable at the addresses the example Secret names.
func checkDatastores(t *testing.T, ex *manifests, secret *corev1.Secret) {
	t.Helper()
	if len(ex.statefulSets) != 2 {
		t.Fatalf("examples: %d StatefulSets, want Redis and PostgreSQL: %v", len(ex.statefulSets), ex.files)
	}
	svcPort := map[string]map[int32]bool{}
	for _, s := range ex.services {
		svcPort[s.Name] = map[int32]bool{}
		for _, p := range s.Spec.Ports {
			svcPort[s.Name][p.Port] = true
		}
	}
	for _, ss := range ex.statefulSets {
		pod := ss.Spec.Template.Spec
		if _, ok := svcPort[ss.Spec.ServiceName]; !ok {
			t.Errorf("StatefulSet %s: serviceName %q is not a Service of the example", ss.Name, ss.Spec.ServiceName)
		}
		if s, err := metav1.LabelSelectorAsSelector(ss.Spec.Selector); err != nil || !s.Matches(labels.Set(ss.Spec.Template.Labels)) {
			t.Errorf("StatefulSet %s: its selector does not select its pods", ss.Name)
		}
		if len(ss.Spec.VolumeClaimTemplates) == 0 {
			t.Errorf("StatefulSet %s: no volumeClaimTemplates: its data would not outlive the pod", ss.Name)
		}
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("StatefulSet %s: want runAsNonRoot", ss.Name)
		}
		for _, c := range pod.Containers {
			if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
				t.Errorf("StatefulSet %s: image %q: want a pinned tag", ss.Name, c.Image)
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("StatefulSet %s: want readiness and liveness probes", ss.Name)
			}
		}
	}
	for _, k := range []string{"AGENTWIRE_REDIS_URL", "AGENTWIRE_DATABASE_URL"} {
		u, err := url.Parse(secret.StringData[k])
		if err != nil {
			t.Errorf("example Secret %s: %v", k, err)
			continue
		}
		host, port, err := net.SplitHostPort(u.Host)
		var p int32
		if _, serr := fmt.Sscan(port, &p); err != nil || serr != nil || !svcPort[host][p] {
			t.Errorf("example Secret %s: %s is not a Service and port of the example datastores", k, u.Host)
		}
	}
}
