package main

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// containerEnv builds a container's environment as the kubelet does: service
// variables for the API server, envFrom, then env with valueFrom and $(VAR)
// expansion. Processes do not inherit localnode's own environment.
func containerEnv(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, podIP, apiHost, apiPort string) ([]string, map[string]string, error) {
	vars := map[string]string{
		"PATH":                          defaultPath,
		"HOSTNAME":                      pod.Name,
		"HOME":                          "/root",
		"KUBERNETES_SERVICE_HOST":       apiHost,
		"KUBERNETES_SERVICE_PORT":       apiPort,
		"KUBERNETES_SERVICE_PORT_HTTPS": apiPort,
		"KUBERNETES_PORT":               fmt.Sprintf("tcp://%s:%s", apiHost, apiPort),
		"KUBERNETES_PORT_443_TCP":       fmt.Sprintf("tcp://%s:%s", apiHost, apiPort),
		"KUBERNETES_PORT_443_TCP_PROTO": "tcp",
		"KUBERNETES_PORT_443_TCP_ADDR":  apiHost,
		"KUBERNETES_PORT_443_TCP_PORT":  apiPort,
	}
	order := []string{}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, from := range c.EnvFrom {
		data, err := envFromSource(ctx, client, pod.Namespace, from)
		if err != nil {
			return nil, nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		value := expand(e.Value, vars)
		if e.ValueFrom != nil {
			v, ok, err := envValueFrom(ctx, client, pod, c, podIP, e.ValueFrom)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			if !ok {
				continue
			}
			value = v
		}
		set(e.Name, value)
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, vars, nil
}

var varRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expand replaces $(VAR) with defined variables, leaves undefined references as
// they are, and turns $$ into $, as Kubernetes does for env, command and args.
func expand(s string, vars map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

func envFromSource(ctx context.Context, client kubernetes.Interface, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	var src source
	var optional *bool
	switch {
	case from.ConfigMapRef != nil:
		src, optional = configMapSource(from.ConfigMapRef.Name), from.ConfigMapRef.Optional
	case from.SecretRef != nil:
		src, optional = secretSource(from.SecretRef.Name), from.SecretRef.Optional
	default:
		return nil, errConfig{"unsupported envFrom source"}
	}
	data, found, err := sourceData(ctx, client, ns, src)
	if err != nil {
		return nil, err
	}
	if !found && !ptr.Deref(optional, false) {
		return nil, errConfig{src.String() + " not found"}
	}
	out := map[string]string{}
	for k, v := range data {
		out[k] = string(v)
	}
	return out, nil
}

// envValueFrom resolves one valueFrom; ok is false for a missing optional key.
func envValueFrom(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, podIP string, from *corev1.EnvVarSource) (string, bool, error) {
	var src source
	var key string
	var optional *bool
	switch {
	case from.FieldRef != nil:
		v, err := podField(pod, podIP, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := resourceField(pod, c.Name, from.ResourceFieldRef)
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		src, key, optional = configMapSource(ref.Name), ref.Key, ref.Optional
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		src, key, optional = secretSource(ref.Name), ref.Key, ref.Optional
	default:
		return "", false, errConfig{"unsupported valueFrom"}
	}
	data, found, err := sourceData(ctx, client, pod.Namespace, src)
	if err != nil {
		return "", false, err
	}
	if v, ok := data[key]; ok {
		return string(v), true, nil
	}
	if ptr.Deref(optional, false) {
		return "", false, nil
	}
	if !found {
		return "", false, errConfig{src.String() + " not found"}
	}
	return "", false, errConfig{fmt.Sprintf("%s has no key %q", src, key)}
}

var labelRef = regexp.MustCompile(`^metadata\.(labels|annotations)\['(.+)'\]$`)

// podField resolves the downward API field paths the kubelet supports.
func podField(pod *corev1.Pod, podIP, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	if m := labelRef.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	return "", errConfig{fmt.Sprintf("unsupported fieldRef %q", path)}
}

func formatMap(m map[string]string) string {
	lines := make([]string, 0, len(m))
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// resourceField resolves limits/requests; an unset limit reads as the node's capacity.
func resourceField(pod *corev1.Pod, container string, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" {
		container = ref.ContainerName
	}
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return "", errConfig{fmt.Sprintf("resourceFieldRef: no container %q", container)}
	}
	parts := strings.SplitN(ref.Resource, ".", 2)
	if len(parts) != 2 {
		return "", errConfig{fmt.Sprintf("unsupported resource %q", ref.Resource)}
	}
	list := c.Resources.Limits
	if parts[0] == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(parts[1])]
	if !ok {
		switch parts[1] {
		case "cpu":
			q = *resource.NewQuantity(int64(numCPU()), resource.DecimalSI)
		case "memory":
			q = *resource.NewQuantity(memoryBytes(), resource.BinarySI)
		default:
			q = resource.MustParse("0")
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	v := math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue()))
	return fmt.Sprintf("%d", int64(v)), nil
}
