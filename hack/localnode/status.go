package main

import (
	"context"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// writeStatusLoop writes the Pod status whenever the worker's state changes.
func (w *podWorker) writeStatusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.dirty:
		}
		w.writeStatus(ctx)
	}
}

// writeStatus replaces the status fields this node owns, retrying conflicts.
func (w *podWorker) writeStatus(ctx context.Context) {
	pods := w.m.client.CoreV1().Pods(w.pod.Namespace)
	for attempt := 0; attempt < 5; attempt++ {
		latest, err := pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
		if err != nil || latest.UID != w.pod.UID {
			return // gone, or replaced by a Pod of the same name
		}
		w.mu.Lock()
		latest.Status = w.podStatus(latest.Status)
		w.mu.Unlock()
		_, err = pods.UpdateStatus(ctx, latest, metav1.UpdateOptions{})
		if err == nil || apierrors.IsNotFound(err) || ctx.Err() != nil {
			return
		}
		if !apierrors.IsConflict(err) {
			w.log.Warn("pod status update failed", "err", err)
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// podStatus computes the status from the worker's state; callers hold w.mu.
func (w *podWorker) podStatus(old corev1.PodStatus) corev1.PodStatus {
	s := &w.state
	st := old
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	st.PodIP, st.PodIPs = s.podIP, nil
	if s.podIP != "" {
		st.PodIPs = []corev1.PodIP{{IP: s.podIP}}
	}
	st.StartTime = s.startTime
	st.InitContainerStatuses = containerStatuses(s.init)
	st.ContainerStatuses = containerStatuses(s.main)

	st.Phase = corev1.PodPending
	anyStarted := false
	allDone, allSucceeded := s.finished && len(s.main) > 0, true
	for _, c := range s.main {
		if c.running != nil || c.restarts > 0 || c.terminated != nil {
			anyStarted = true
		}
		if c.terminated == nil {
			allDone = false
		} else if c.terminated.ExitCode != 0 {
			allSucceeded = false
		}
	}
	initFailed := s.finished && !s.initialized && len(s.init) > 0 && w.pod.Spec.RestartPolicy == corev1.RestartPolicyNever &&
		s.init[len(s.init)-1].terminated != nil
	switch {
	case allDone && allSucceeded:
		st.Phase = corev1.PodSucceeded
	case allDone || initFailed:
		st.Phase = corev1.PodFailed
	case anyStarted:
		st.Phase = corev1.PodRunning
	}

	ready := len(s.main) > 0
	for _, c := range s.main {
		ready = ready && c.ready && c.running != nil
	}
	cond := func(b bool) corev1.ConditionStatus {
		if b {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	readyReason := ""
	if !ready {
		readyReason = "ContainersNotReady"
		if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
			readyReason = "PodCompleted"
		}
	}
	st.Conditions = mergePodConditions(old.Conditions, []corev1.PodCondition{
		{Type: corev1.PodReadyToStartContainers, Status: cond(s.volumesReady)},
		{Type: corev1.PodInitialized, Status: cond(s.initialized)},
		{Type: corev1.ContainersReady, Status: cond(ready), Reason: readyReason},
		{Type: corev1.PodReady, Status: cond(ready), Reason: readyReason},
	})
	return st
}

func containerStatuses(states []*containerState) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, 0, len(states))
	for _, c := range states {
		cs := corev1.ContainerStatus{
			Name: c.name, Image: c.image, ImageID: c.imageID,
			Ready: c.ready, RestartCount: c.restarts, Started: ptr.To(c.running != nil && c.started),
		}
		switch {
		case c.running != nil:
			cs.State.Running = c.running.DeepCopy()
			cs.ContainerID = "localnode://" + itoa(c.pid)
		case c.terminated != nil:
			cs.State.Terminated = c.terminated.DeepCopy()
			cs.ContainerID = c.terminated.ContainerID
		case c.waiting != nil:
			cs.State.Waiting = c.waiting.DeepCopy()
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		if c.last != nil {
			cs.LastTerminationState.Terminated = c.last.DeepCopy()
		}
		out = append(out, cs)
	}
	return out
}

// mergePodConditions keeps conditions owned by others (PodScheduled) and the
// transition time of those whose status did not change.
func mergePodConditions(old, want []corev1.PodCondition) []corev1.PodCondition {
	now := metav1.Now()
	owned := map[corev1.PodConditionType]bool{}
	for _, c := range want {
		owned[c.Type] = true
	}
	var out []corev1.PodCondition
	for _, o := range old {
		if !owned[o.Type] {
			out = append(out, o)
		}
	}
	for _, c := range want {
		c.LastTransitionTime = now
		for _, o := range old {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		out = append(out, c)
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }
