// Preloaded into a child (NODE_OPTIONS=--import <this file>, which, unlike --cpu-prof, NODE_OPTIONS
// allows): starts V8's sampling CPU profiler on SIGUSR2 (so start-up is left out: the benchmark
// signals after its warm-up) and writes a .cpuprofile into ODSI_CPU_PROF_DIR on exit.
// Benchmarks only (bench/hop-overhead --profile).
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.env.ODSI_CPU_PROF_DIR;
if (dir) {
  const s = new Session();
  s.connect();
  s.post('Profiler.enable');
  s.post('Profiler.setSamplingInterval', { interval: 200 });
  process.once('SIGUSR2', () => s.post('Profiler.start'));
  process.once('exit', () => {
    // the main-thread session answers synchronously, so this completes inside 'exit'
    s.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(join(dir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
