// Package health checks that the health checks Argo CD and Flux run read a
// LogSubscription's status as meant: the Lua script in docs/health run with
// gopher-lua (the interpreter Argo CD embeds), and kstatus (what Flux uses).
// The fixtures in testdata have the shape the controller writes.
package health

import (
	"os"
	"path/filepath"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func load(t *testing.T, name string) map[string]interface{} {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	// As the API machinery decodes it: integers stay int64.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	return u.Object
}

// toLua converts decoded JSON to Lua values, as Argo CD does.
func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case map[string]interface{}:
		t := L.NewTable()
		for k, x := range v {
			t.RawSetString(k, toLua(L, x))
		}
		return t
	case []interface{}:
		t := L.NewTable()
		for _, x := range v {
			t.Append(toLua(L, x))
		}
		return t
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func argoHealth(t *testing.T, obj map[string]interface{}) (string, string) {
	t.Helper()
	script, err := os.ReadFile("../../docs/health/argocd-logsubscription.lua")
	if err != nil {
		t.Fatal(err)
	}
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(string(script)); err != nil {
		t.Fatal(err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatal("the script returns no table")
	}
	return hs.RawGetString("status").String(), hs.RawGetString("message").String()
}

func TestArgoCDAndFluxReadTheConditions(t *testing.T) {
	cases := []struct {
		fixture, argo string
		flux          status.Status
	}{
		{"ready", "Healthy", status.CurrentStatus},
		{"reconciling", "Progressing", status.InProgressStatus},
		{"stalled", "Degraded", status.FailedStatus},
		{"stale-generation", "Progressing", status.InProgressStatus},
		// kstatus cannot tell a resource no controller has seen yet from one
		// without a status at all: Current until the first reconcile writes
		// observedGeneration and the conditions (within a second or so).
		{"new", "Progressing", status.CurrentStatus},
	}
	for _, c := range cases {
		obj := load(t, c.fixture)
		argo, message := argoHealth(t, obj)
		if argo != c.argo {
			t.Errorf("%s: Argo CD health %s (%s), want %s", c.fixture, argo, message, c.argo)
		}
		result, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			t.Fatalf("%s: kstatus: %v", c.fixture, err)
		}
		if result.Status != c.flux {
			t.Errorf("%s: kstatus %s (%s), want %s", c.fixture, result.Status, result.Message, c.flux)
		}
	}
}
