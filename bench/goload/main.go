// Command goload runs the benchmark's workloads with Go's clientv3: the ceiling
// the Python clients are compared with.
//
// It speaks the Python drivers' protocol (bench/drivers/_common.py): flags
// -endpoint, -workload, -params (JSON) and -role; one "@@BENCH {json}" line per
// result on stdout. Built offline in GOPATH mode against Debian's
// golang-etcd-server-dev (clientv3 3.4) by bench/gobuild.py.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/version"
	"go.uber.org/zap"
)

const mark = "@@BENCH "

type params map[string]interface{}

func (p params) num(name string) float64 {
	v, ok := p[name].(float64)
	if !ok {
		fail(fmt.Errorf("missing numeric param %q", name))
	}
	return v
}

func (p params) int(name string) int { return int(p.num(name)) }

func (p params) str(name string) string {
	v, _ := p[name].(string)
	return v
}

func (p params) strs(name string) []string {
	raw, _ := p[name].([]interface{})
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		out = append(out, v.(string))
	}
	return out
}

func emit(fields map[string]interface{}) {
	line, err := json.Marshal(fields)
	if err != nil {
		fail(err)
	}
	fmt.Println(mark + string(line))
}

func result(workload string, rep int, metrics map[string]float64) {
	emit(map[string]interface{}{"type": "result", "workload": workload, "rep": rep, "metrics": metrics})
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "goload:", err)
	os.Exit(1)
}

func check(err error) {
	if err != nil {
		fail(err)
	}
}

// percentile is the nearest-rank percentile (q in 0..100), as in _common.py.
func percentile(values []float64, q float64) float64 {
	if len(values) == 0 {
		return 0
	}
	ordered := append([]float64(nil), values...)
	sort.Float64s(ordered)
	rank := int(math.Round(q/100*float64(len(ordered)) + 0.5 - 1e-9))
	if rank < 1 {
		rank = 1
	}
	if rank > len(ordered) {
		rank = len(ordered)
	}
	return ordered[rank-1]
}

// latencyMetrics mirrors _common.latency_metrics (cpu: this process's CPU seconds).
func latencyMetrics(lat []float64, ops int, wall, cpu float64) map[string]float64 {
	return map[string]float64{
		"ops_s":     float64(ops) / wall,
		"p50_ms":    percentile(lat, 50) * 1e3,
		"p99_ms":    percentile(lat, 99) * 1e3,
		"cpu_us_op": cpu / math.Max(float64(ops), 1) * 1e6,
	}
}

func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func rssMB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	check(err)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func watchGauges(url string) (float64, float64) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	check(err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	check(err)
	var streams, watchers float64
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "etcd_debugging_mvcc_watch_stream_total ") {
			streams, _ = strconv.ParseFloat(strings.Fields(line)[1], 64)
		} else if strings.HasPrefix(line, "etcd_debugging_mvcc_watcher_total ") {
			watchers, _ = strconv.ParseFloat(strings.Fields(line)[1], 64)
		}
	}
	return streams, watchers
}

type writerReport struct {
	Start   float64 `json:"start"`
	End     float64 `json:"end"`
	Written int     `json:"written"`
}

// startWriter runs the shared etcdsync writer (see bench/writer.py).
func startWriter(p params, endpoint, prefix string, count, batch, valueSize int) (*exec.Cmd, *strings.Builder) {
	args := p.strs("writer_cmd")
	args = append(args, "--endpoint", endpoint, "--prefix", prefix, "--count", strconv.Itoa(count),
		"--batch", strconv.Itoa(batch), "--value-size", strconv.Itoa(valueSize))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = p.str("writer_cwd")
	out := &strings.Builder{}
	cmd.Stdout = out
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	return cmd, out
}

func finishWriter(cmd *exec.Cmd, out *strings.Builder) writerReport {
	check(cmd.Wait())
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, mark) {
			var report writerReport
			check(json.Unmarshal([]byte(line[len(mark):]), &report))
			return report
		}
	}
	fail(fmt.Errorf("writer printed no report"))
	return writerReport{}
}

func warmup(cli *clientv3.Client, prefix string) {
	for i := 0; i < 20; i++ {
		_, err := cli.Put(context.Background(), prefix+"warmup", "x")
		check(err)
		_, err = cli.Get(context.Background(), prefix+"warmup")
		check(err)
	}
}

func putSeq(cli *clientv3.Client, p params) {
	prefix, value := p.str("prefix"), strings.Repeat("v", p.int("value_size"))
	warmup(cli, prefix)
	for rep := 0; rep < p.int("reps"); rep++ {
		n := p.int("n")
		lat := make([]float64, 0, n)
		cpu0, start := cpuSeconds(), time.Now()
		for i := 0; i < n; i++ {
			t := time.Now()
			_, err := cli.Put(context.Background(), fmt.Sprintf("%sput/%d/%08d", prefix, rep, i), value)
			check(err)
			lat = append(lat, time.Since(t).Seconds())
		}
		result("put_seq", rep, latencyMetrics(lat, n, time.Since(start).Seconds(), cpuSeconds()-cpu0))
	}
}

func getSeq(cli *clientv3.Client, p params) {
	prefix, key := p.str("prefix"), p.str("prefix")+"get/key"
	_, err := cli.Put(context.Background(), key, strings.Repeat("v", p.int("value_size")))
	check(err)
	warmup(cli, prefix)
	for rep := 0; rep < p.int("reps"); rep++ {
		n := p.int("n")
		lat := make([]float64, 0, n)
		cpu0, start := cpuSeconds(), time.Now()
		for i := 0; i < n; i++ {
			t := time.Now()
			_, err := cli.Get(context.Background(), key)
			check(err)
			lat = append(lat, time.Since(t).Seconds())
		}
		result("get_seq", rep, latencyMetrics(lat, n, time.Since(start).Seconds(), cpuSeconds()-cpu0))
	}
}

func deleteSeq(cli *clientv3.Client, p params) {
	prefix, value := p.str("prefix"), strings.Repeat("v", p.int("value_size"))
	warmup(cli, prefix)
	for rep := 0; rep < p.int("reps"); rep++ {
		n := p.int("n")
		keys := make([]string, n)
		for i := range keys { // each delete removes a key that exists (not timed)
			keys[i] = fmt.Sprintf("%sdel/%d/%08d", prefix, rep, i)
			_, err := cli.Put(context.Background(), keys[i], value)
			check(err)
		}
		lat := make([]float64, 0, n)
		cpu0, start := cpuSeconds(), time.Now()
		for _, key := range keys {
			t := time.Now()
			_, err := cli.Delete(context.Background(), key)
			check(err)
			lat = append(lat, time.Since(t).Seconds())
		}
		result("delete_seq", rep, latencyMetrics(lat, n, time.Since(start).Seconds(), cpuSeconds()-cpu0))
	}
}

func txnSeq(cli *clientv3.Client, p params) {
	key, value := p.str("prefix")+"txn/key", strings.Repeat("v", p.int("value_size"))
	_, err := cli.Put(context.Background(), key, value)
	check(err)
	warmup(cli, p.str("prefix"))
	for rep := 0; rep < p.int("reps"); rep++ {
		n := p.int("n")
		lat := make([]float64, 0, n)
		cpu0, start := cpuSeconds(), time.Now()
		for i := 0; i < n; i++ {
			t := time.Now()
			_, err := cli.Txn(context.Background()).
				If(clientv3.Compare(clientv3.Version(key), ">", 0)).
				Then(clientv3.OpPut(key, value)).
				Else(clientv3.OpGet(key)).
				Commit()
			check(err)
			lat = append(lat, time.Since(t).Seconds())
		}
		result("txn_seq", rep, latencyMetrics(lat, n, time.Since(start).Seconds(), cpuSeconds()-cpu0))
	}
}

// putConcurrent keeps `workers` puts in flight (goroutines), for both the
// 16-thread and the 64-in-flight workloads.
func putConcurrent(cli *clientv3.Client, p params, workload string, workers int) {
	prefix, value := p.str("prefix"), strings.Repeat("v", p.int("value_size"))
	warmup(cli, prefix)
	for rep := 0; rep < p.int("reps"); rep++ {
		per := p.int("n") / workers
		lats := make([][]float64, workers)
		var wg sync.WaitGroup
		cpu0, start := cpuSeconds(), time.Now()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				lat := make([]float64, 0, per)
				for i := 0; i < per; i++ {
					t := time.Now()
					_, err := cli.Put(context.Background(), fmt.Sprintf("%sputc/%d/%d/%d", prefix, rep, w, i), value)
					check(err)
					lat = append(lat, time.Since(t).Seconds())
				}
				lats[w] = lat
			}(w)
		}
		wg.Wait()
		wall, cpu := time.Since(start).Seconds(), cpuSeconds()-cpu0
		var flat []float64
		for _, lat := range lats {
			flat = append(flat, lat...)
		}
		result(workload, rep, latencyMetrics(flat, len(flat), wall, cpu))
	}
}

func rangeRead(cli *clientv3.Client, p params, endpoint string) {
	prefix, keys := p.str("prefix")+"range/", p.int("keys")
	// The keys stay between the rounds of this workload: load them once.
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	check(err)
	if resp.Count != int64(keys) {
		cmd, out := startWriter(p, endpoint, prefix, keys, 100, p.int("value_size"))
		finishWriter(cmd, out)
	}
	reads := 1
	if _, ok := p["reads"]; ok {
		reads = p.int("reads")
	}
	for rep := -1; rep < p.int("reps"); rep++ { // rep -1 warms up
		n := reads
		if rep < 0 {
			n = 1
		}
		cpu0, start := cpuSeconds(), time.Now()
		for i := 0; i < n; i++ {
			resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
			check(err)
			if len(resp.Kvs) != keys {
				fail(fmt.Errorf("range read returned %d keys, not %d", len(resp.Kvs), keys))
			}
		}
		wall, cpu := time.Since(start).Seconds()/float64(n), (cpuSeconds()-cpu0)/float64(n)
		if rep >= 0 {
			result("range_read", rep, map[string]float64{
				"read_ms": wall * 1e3, "keys_s": float64(keys) / wall, "cpu_ms": cpu * 1e3,
			})
		}
	}
}

func watchDelivery(cli *clientv3.Client, p params, endpoint string) {
	warmup(cli, p.str("prefix"))
	expected := p.int("events")
	for rep := 0; rep < p.int("reps"); rep++ {
		prefix := fmt.Sprintf("%swatch/%d/", p.str("prefix"), rep)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(p.num("deadline")*float64(time.Second)))
		ch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		<-ch // created
		cmd, out := startWriter(p, endpoint, prefix, expected, p.int("batch"), p.int("value_size"))
		seen := make([]bool, expected)
		unique, received := 0, 0
		last := now()
		cpu0 := cpuSeconds()
	loop:
		for resp := range ch {
			for _, ev := range resp.Events {
				key := ev.Kv.Key
				idx, err := strconv.Atoi(string(key[len(key)-8:]))
				check(err)
				received++
				if !seen[idx] {
					seen[idx] = true
					unique++
				}
			}
			last = now()
			if unique >= expected {
				break loop
			}
		}
		cancel()
		cpu := cpuSeconds() - cpu0
		report := finishWriter(cmd, out)
		span := math.Max(last-report.Start, 1e-9)
		result("watch_delivery", rep, map[string]float64{
			"events_s":         float64(unique) / span,
			"writer_events_s":  float64(expected) / math.Max(report.End-report.Start, 1e-9),
			"lag_ms":           math.Max(0, last-report.End) * 1e3,
			"lost":             float64(expected - unique),
			"duplicates":       float64(received - unique),
			"cpu_us_per_event": cpu / math.Max(float64(received), 1) * 1e6,
		})
		_, err := cli.Delete(context.Background(), prefix, clientv3.WithPrefix())
		check(err)
	}
}

func watchers(cli *clientv3.Client, p params, workload string) {
	warmup(cli, p.str("prefix"))
	streams0, watchers0 := watchGauges(p.str("metrics_url"))
	rss0 := rssMB()
	n := p.int("n")
	chans := make([]clientv3.WatchChan, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		ch := cli.Watch(context.Background(), fmt.Sprintf("%swatchers/%08d", p.str("prefix"), i), clientv3.WithCreatedNotify())
		<-ch // wait for the server's confirmation, as the Python clients do
		chans = append(chans, ch)
	}
	wall := time.Since(start).Seconds()
	rss1 := rssMB()
	streams1, watchers1 := watchGauges(p.str("metrics_url"))
	result(workload, p.int("rep"), map[string]float64{
		"create_s":        wall,
		"rss_mb":          rss1 - rss0,
		"streams":         streams1 - streams0,
		"server_watchers": watchers1 - watchers0,
	})
	_ = chans
}

func leases(cli *clientv3.Client, p params, workload string) {
	ttl, n := int64(p.int("ttl")), p.int("n")
	ids := make([]clientv3.LeaseID, n)
	var next int64 = -1
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := atomic.AddInt64(&next, 1)
				if i >= int64(n) {
					return
				}
				resp, err := cli.Grant(context.Background(), ttl)
				check(err)
				ids[i] = resp.ID
			}
		}()
	}
	wg.Wait()
	var renewals, lost int64
	ctx, cancel := context.WithCancel(context.Background())
	for _, id := range ids {
		ch, err := cli.KeepAlive(ctx, id)
		check(err)
		go func() {
			for range ch {
				atomic.AddInt64(&renewals, 1)
			}
			if ctx.Err() == nil {
				atomic.AddInt64(&lost, 1)
			}
		}()
	}
	time.Sleep(time.Duration(p.num("warmup") * float64(time.Second)))
	for rep := 0; rep < p.int("reps"); rep++ {
		r0, cpu0, wall0 := atomic.LoadInt64(&renewals), cpuSeconds(), time.Now()
		time.Sleep(time.Duration(p.num("window") * float64(time.Second)))
		cpu, wall := cpuSeconds()-cpu0, time.Since(wall0).Seconds()
		r := float64(atomic.LoadInt64(&renewals) - r0)
		perRenewal := 0.0
		if r > 0 {
			perRenewal = cpu / r * 1e6
		}
		result(workload, rep, map[string]float64{
			"cpu_pct":             cpu / wall * 100,
			"renewals_s":          r / wall,
			"expected_renewals_s": float64(n) / (float64(ttl) / 3),
			"cpu_us_per_renewal":  perRenewal,
			"lost":                float64(atomic.LoadInt64(&lost)),
		})
	}
	cancel()
}

// lockCycle acquires and releases the lock `name` once with Go's own recipe,
// calling body while it is held.
func lockCycle(sess *concurrency.Session, name string, timeout float64, body func()) bool {
	m := concurrency.NewMutex(sess, name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout*float64(time.Second)))
	defer cancel()
	if err := m.Lock(ctx); err != nil {
		return false
	}
	body()
	check(m.Unlock(context.Background()))
	return true
}

func lockUncontended(cli *clientv3.Client, p params) {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(p.int("ttl")))
	check(err)
	defer sess.Close()
	name, timeout := p.str("prefix")+"lock/solo", p.num("timeout")
	for i := 0; i < 3; i++ {
		lockCycle(sess, name, timeout, func() {})
	}
	for rep := 0; rep < p.int("reps"); rep++ {
		var lat []float64
		failures := 0
		cpu0, start := cpuSeconds(), time.Now()
		for i := 0; i < p.int("cycles"); i++ {
			t := time.Now()
			if lockCycle(sess, name, timeout, func() {}) {
				lat = append(lat, time.Since(t).Seconds())
			} else {
				failures++
			}
		}
		m := latencyMetrics(lat, len(lat), time.Since(start).Seconds(), cpuSeconds()-cpu0)
		result("lock_uncontended", rep, map[string]float64{
			"cycles_s": m["ops_s"], "p50_ms": m["p50_ms"], "p99_ms": m["p99_ms"],
			"cpu_us_op": m["cpu_us_op"], "failures": float64(failures),
		})
	}
}

// rpcCounts reads the server's own counters: finished unary calls per method, and
// messages received on bidi streams ("Watch:msgs"), as _common.rpc_counts does.
func rpcCounts(url string) map[string]float64 {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	check(err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	check(err)
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 2 {
			continue
		}
		value, _ := strconv.ParseFloat(fields[1], 64)
		method := between(fields[0], `grpc_method="`, `"`)
		switch {
		case strings.HasPrefix(line, "grpc_server_handled_total{") && strings.Contains(line, `grpc_type="unary"`):
			out[method] += value
		case strings.HasPrefix(line, "grpc_server_msg_received_total{") && strings.Contains(line, `grpc_type="bidi_stream"`):
			out[method+":msgs"] += value
		}
	}
	return out
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	rest := s[i+len(start):]
	return rest[:strings.Index(rest, end)]
}

// rpcDelta returns the unary calls and the watch messages between two rpcCounts.
func rpcDelta(before, after map[string]float64) (unary, watch float64) {
	for k, v := range after {
		d := v - before[k]
		switch {
		case k == "Watch:msgs":
			watch += d
		case !strings.HasSuffix(k, ":msgs"):
			unary += d
		}
	}
	return unary, watch
}

// sweepWatchers creates n watchers of one key (a goroutine each, as Go users do),
// then times one put reaching all of them.
func sweepWatchers(cli *clientv3.Client, p params) {
	n, key := p.int("n"), p.str("prefix")+"sweep/watched"
	_, err := cli.Put(context.Background(), key, "0")
	check(err)
	// A first watcher elsewhere: the watch stream exists before measuring.
	<-cli.Watch(context.Background(), key+"/first", clientv3.WithCreatedNotify())
	rss0 := rssMB()
	threads0 := runtime.NumGoroutine()
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		ch := cli.Watch(context.Background(), key, clientv3.WithCreatedNotify())
		<-ch // confirmed by the server, as the Python clients wait
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range ch {
				if len(resp.Events) > 0 {
					return
				}
			}
		}()
	}
	create := time.Since(start).Seconds()
	rss1 := rssMB()
	goroutines := runtime.NumGoroutine() - threads0
	putAt := time.Now()
	_, err = cli.Put(context.Background(), key, "1")
	check(err)
	wg.Wait()
	result("sweep_watchers", p.int("rep"), map[string]float64{
		"create_s":   create,
		"rss_mb":     rss1 - rss0,
		"deliver_ms": time.Since(putAt).Seconds() * 1e3,
		"threads":    float64(goroutines), // goroutines: Go has no thread per watcher either way
	})
}

func recipeRPCs(cli *clientv3.Client, p params, endpoint string) {
	url, base := p.str("metrics_url"), p.str("prefix")+"rpc/"
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(p.int("ttl")))
	check(err)
	defer sess.Close()
	metrics := map[string]float64{}
	for i := 0; i < 3; i++ {
		lockCycle(sess, base+"solo", p.num("timeout"), func() {})
	}
	cycles := p.int("cycles")
	before := rpcCounts(url)
	for i := 0; i < cycles; i++ {
		lockCycle(sess, base+"solo", p.num("timeout"), func() {})
	}
	unary, watch := rpcDelta(before, rpcCounts(url))
	metrics["lock_rpcs"], metrics["lock_watch_msgs"] = unary/float64(cycles), watch/float64(cycles)

	// Contended handoff: from the holder's release to the waiter's acquire.
	other, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
	check(err)
	defer other.Close()
	otherSess, err := concurrency.NewSession(other, concurrency.WithTTL(p.int("ttl")))
	check(err)
	defer otherSess.Close()
	lockCycle(otherSess, base+"warm", p.num("timeout"), func() {})
	holder := concurrency.NewMutex(sess, base+"handoff")
	check(holder.Lock(context.Background()))
	var acquired map[string]float64
	done := make(chan struct{})
	go func() {
		lockCycle(otherSess, base+"handoff", p.num("timeout"), func() { acquired = rpcCounts(url) })
		close(done)
	}()
	time.Sleep(500 * time.Millisecond) // the waiter is queued and watching
	release := rpcCounts(url)
	check(holder.Unlock(context.Background()))
	<-done
	metrics["handoff_rpcs"], metrics["handoff_watch_msgs"] = rpcDelta(release, acquired)

	campaign := func() {
		e := concurrency.NewElection(sess, base+"election")
		check(e.Campaign(context.Background(), "bench"))
		check(e.Resign(context.Background()))
	}
	campaign()
	before = rpcCounts(url)
	campaign()
	metrics["campaign_rpcs"], metrics["campaign_watch_msgs"] = rpcDelta(before, rpcCounts(url))
	result("recipe_rpcs", p.int("rep"), metrics)
}

type contenderReport struct {
	Intervals [][3]float64 `json:"intervals"` // acquired, released, requested
	Failures  int          `json:"failures"`
	Pid       int          `json:"pid"`
}

func contender(cli *clientv3.Client, p params) {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(p.int("ttl")))
	check(err)
	fmt.Println(mark + "READY")
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != "GO" {
		fail(fmt.Errorf("no GO from the parent"))
	}
	report := contenderReport{Intervals: [][3]float64{}, Pid: os.Getpid()}
	for i := 0; i < p.int("cycles"); i++ {
		requested := now()
		ok := lockCycle(sess, p.str("lock_name"), p.num("timeout"), func() {
			acquired := now()
			report.Intervals = append(report.Intervals, [3]float64{acquired, now(), requested})
		})
		if !ok {
			report.Failures++
		}
	}
	check(sess.Close())
	line2, err := json.Marshal(report)
	check(err)
	fmt.Println(mark + string(line2))
}

func lockContended(p params, endpoint string) {
	for rep := 0; rep < p.int("reps"); rep++ {
		name := fmt.Sprintf("%slock/contended/%d", p.str("prefix"), rep)
		result("lock_contended", rep, runContenders(p, endpoint, name, p.int("procs"), p.int("cycles")))
	}
}

func sweepLock(p params, endpoint string) {
	procs := p.int("procs")
	cycles := p.int("cycles_total") / procs
	if cycles < 2 {
		cycles = 2
	}
	name := fmt.Sprintf("%slock/sweep/%d", p.str("prefix"), procs)
	result("sweep_lock", p.int("rep"), runContenders(p, endpoint, name, procs, cycles))
}

// runContenders starts procs contender processes of this binary on lock name,
// releases them together and merges their reports.
func runContenders(p params, endpoint, name string, procs, cycles int) map[string]float64 {
	self, err := os.Executable()
	check(err)
	{
		child := params{}
		for k, v := range p {
			child[k] = v
		}
		child["lock_name"] = name
		child["cycles"] = float64(cycles)
		raw, err := json.Marshal(child)
		check(err)
		type proc struct {
			cmd   *exec.Cmd
			stdin interface{ Write([]byte) (int, error) }
			out   *bufio.Reader
		}
		var children []proc
		for i := 0; i < procs; i++ {
			cmd := exec.Command(self, "-role", "contender", "-endpoint", endpoint, "-params", string(raw))
			stdin, err := cmd.StdinPipe()
			check(err)
			stdout, err := cmd.StdoutPipe()
			check(err)
			cmd.Stderr = os.Stderr
			check(cmd.Start())
			children = append(children, proc{cmd, stdin, bufio.NewReader(stdout)})
		}
		for _, c := range children {
			for {
				line, err := c.out.ReadString('\n')
				check(err)
				if strings.HasPrefix(line, mark+"READY") {
					break
				}
			}
		}
		goTime := now()
		for _, c := range children {
			_, err := c.stdin.Write([]byte("GO\n"))
			check(err)
		}
		var reports []contenderReport
		for _, c := range children {
			for {
				line, err := c.out.ReadString('\n')
				if err != nil {
					break
				}
				if strings.HasPrefix(line, mark) {
					var r contenderReport
					check(json.Unmarshal([]byte(strings.TrimSpace(line[len(mark):])), &r))
					reports = append(reports, r)
				}
			}
			check(c.cmd.Wait())
		}
		return contentionMetrics(goTime, reports, procs*cycles)
	}
}

type held struct {
	acquired, released float64
	pid                int
}

// contentionMetrics mirrors _common.contention_metrics.
func contentionMetrics(goTime float64, reports []contenderReport, wanted int) map[string]float64 {
	var all []held
	for _, r := range reports {
		for _, iv := range r.Intervals {
			all = append(all, held{iv[0], iv[1], r.Pid})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].acquired < all[j].acquired })
	var handoffs []float64
	overlaps, switches := 0, 0
	end := goTime
	for i, h := range all {
		if h.released > end {
			end = h.released
		}
		if i == 0 {
			continue
		}
		gap := h.acquired - all[i-1].released
		if gap < 0 {
			overlaps++
		}
		if h.pid != all[i-1].pid {
			switches++
			handoffs = append(handoffs, gap)
		}
	}
	var waits []float64
	for _, r := range reports {
		for _, iv := range r.Intervals {
			waits = append(waits, iv[0]-iv[2])
		}
	}
	worst, sum := 0.0, 0.0
	for _, w := range waits {
		sum += w
		if w > worst {
			worst = w
		}
	}
	mean, fairness := 0.0, 1.0
	if len(waits) > 0 {
		mean = sum / float64(len(waits))
		if mean > 0 {
			fairness = worst / mean
		}
	}
	return map[string]float64{
		"worst_wait_ms":  worst * 1e3,
		"mean_wait_ms":   mean * 1e3,
		"fairness":       fairness,
		"wall_s":         end - goTime,
		"cycles":         float64(len(all)),
		"switches":       float64(switches),
		"handoff_p50_ms": percentile(handoffs, 50) * 1e3,
		"handoff_p99_ms": percentile(handoffs, 99) * 1e3,
		"overlaps":       float64(overlaps),
		"failures":       float64(wanted - len(all)),
	}
}

func clientVersion() string { return version.Version }

func goVersion() string { return runtime.Version() }

func main() {
	endpoint := flag.String("endpoint", "", "host:port")
	workload := flag.String("workload", "", "workload name")
	rawParams := flag.String("params", "{}", "JSON parameters")
	role := flag.String("role", "driver", "driver or contender")
	flag.Parse()
	var p params
	check(json.Unmarshal([]byte(*rawParams), &p))
	if p.str("prefix") == "" {
		p["prefix"] = "bench/"
	}
	quiet := zap.NewProductionConfig()
	quiet.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{*endpoint},
		DialTimeout: 10 * time.Second,
		LogConfig:   &quiet,
	})
	check(err)
	defer cli.Close()
	if *role == "contender" {
		contender(cli, p)
		return
	}
	emit(map[string]interface{}{"type": "meta", "client": "go", "versions": map[string]string{
		"clientv3": clientVersion(), "go": goVersion(),
	}})
	switch {
	case *workload == "put_seq":
		putSeq(cli, p)
	case *workload == "get_seq":
		getSeq(cli, p)
	case *workload == "delete_seq":
		deleteSeq(cli, p)
	case *workload == "txn_seq":
		txnSeq(cli, p)
	case *workload == "put_threads":
		putConcurrent(cli, p, *workload, p.int("threads"))
	case *workload == "put_inflight":
		putConcurrent(cli, p, *workload, p.int("inflight"))
	case *workload == "range_read":
		rangeRead(cli, p, *endpoint)
	case *workload == "watch_delivery":
		watchDelivery(cli, p, *endpoint)
	case strings.HasPrefix(*workload, "watchers"):
		watchers(cli, p, *workload)
	case strings.HasPrefix(*workload, "leases"):
		leases(cli, p, *workload)
	case *workload == "lock_uncontended":
		lockUncontended(cli, p)
	case *workload == "lock_contended":
		lockContended(p, *endpoint)
	case *workload == "sweep_watchers":
		sweepWatchers(cli, p)
	case *workload == "sweep_leases":
		leases(cli, p, *workload)
	case *workload == "sweep_lock":
		sweepLock(p, *endpoint)
	case *workload == "recipe_rpcs":
		recipeRPCs(cli, p, *endpoint)
	default:
		emit(map[string]interface{}{"type": "skip", "workload": *workload, "reason": "unknown workload"})
	}
}
