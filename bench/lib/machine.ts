// Description of the machine a benchmark ran on, written next to every result.
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, freemem, loadavg, totalmem } from 'node:os';
import { resolve } from 'node:path';

export interface MachineInfo {
  cpu: string;
  cores: number;
  memGiB: number;
  freeMemGiB: number;
  loadAvg: number[];
  node: string;
  platform: string;
  ortVersion?: string;
  llamaCppVersion?: string;
  date: string;
}

function pkgVersion(name: string): string | undefined {
  try {
    // package.json is not always an export of the package: read it from node_modules
    const p = resolve(process.cwd(), 'node_modules', name, 'package.json');
    return (JSON.parse(readFileSync(p, 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

export function describeMachine(): MachineInfo {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    // the VM's model string can be generic; the flags tell which vector extensions exist
    const flags = /flags\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    const ext = ['avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_tile'].filter((f) => flags.split(' ').includes(f));
    if (ext.length) cpu += ` [${ext.join(' ')}]`;
  } catch {
    /* not linux */
  }
  return {
    cpu,
    cores: availableParallelism(),
    memGiB: +(totalmem() / 2 ** 30).toFixed(1),
    freeMemGiB: +(freemem() / 2 ** 30).toFixed(1),
    loadAvg: loadavg().map((x) => +x.toFixed(2)),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    ortVersion: pkgVersion('onnxruntime-node'),
    llamaCppVersion: pkgVersion('node-llama-cpp'),
    date: new Date().toISOString(),
  };
}

export function machineLine(m: MachineInfo): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, load ${m.loadAvg.join('/')}, Node ${m.node}, onnxruntime-node ${m.ortVersion}, node-llama-cpp ${m.llamaCppVersion}`;
}
