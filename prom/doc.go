// Package prom exposes an agentbus.Bus's statistics as Prometheus metrics.
//
// The bus itself depends on no metrics library: this package reads
// Bus.ReadStats on every scrape and turns the snapshot into metrics under the
// agentbus_ prefix, so it counts nothing itself and stays exact however often
// it is scraped.
//
//	reg := prometheus.NewRegistry()
//	if err := prom.Register(reg, bus); err != nil {
//		return err
//	}
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The daemon (agentbus serve --metrics ADDR) serves these beside the standard
// Go runtime and process collectors (go_*, process_*).
package prom
