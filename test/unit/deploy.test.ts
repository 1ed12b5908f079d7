/**
 * The deploy artefacts, checked without a cluster or a Docker engine: the Prometheus rules by
 * promtool (syntax and their unit tests), every metric the rules and the dashboard name against
 * what the worker exports (src/observe/metrics.ts), the Kubernetes manifests against the API's
 * schemas, docker-compose.yml by docker-compose, and the generated PrometheusRule.
 * promtool and docker-compose must be installed (.ci/run installs them): a missing tool fails.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { CHANGE_OPS, METRICS, TABLE_STATES, WAL_STATUSES } from '../../src/observe/metrics.ts';
import { renderPrometheusRule } from '../../scripts/render-prometheus-rule.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const at = (relative: string) => path.join(ROOT, relative);
const read = (relative: string) => readFileSync(at(relative), 'utf8');

const RULES = 'deploy/prometheus/syncctl-rules.yml';
const RULES_TESTS = 'deploy/prometheus/syncctl-rules.test.yml';
const PROMETHEUS_CONFIG = 'deploy/prometheus/prometheus.yml';
const DASHBOARD = 'deploy/grafana/syncctl.json';
const RUNBOOKS = 'docs/runbooks.md';
const RUNBOOK_URL = 'https://github.com/syncctl/syncctl/blob/main/docs/runbooks.md';
const KUBERNETES = 'deploy/kubernetes';

/** Runs a system tool; fails with how to install it when it is not on PATH. */
function runTool(command: string, args: readonly string[], install: string): { status: number; output: string } {
  const result = spawnSync(command, args, { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  if (result.error && (result.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error(`${command} is not installed: ${install} (.ci/run installs it when missing)`);
  }
  if (result.error) throw result.error;
  return { status: result.status ?? -1, output: `${result.stdout}${result.stderr}` };
}
const promtool = (...args: string[]) => runTool('promtool', args, 'apt-get install -y prometheus');

interface AlertRule {
  readonly alert: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}
const alerts: AlertRule[] = (parse(read(RULES)) as { groups: { rules: AlertRule[] }[] }).groups.flatMap((g) => g.rules);

interface Panel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly datasource?: { type?: string; uid?: string };
  readonly targets?: { expr?: string; datasource?: { uid?: string } }[];
}
interface Dashboard {
  readonly schemaVersion: number;
  readonly panels: Panel[];
  readonly templating: { list: { name: string; type: string; query?: unknown; definition?: string }[] };
}
const dashboard = JSON.parse(read(DASHBOARD)) as Dashboard;
const dataPanels = dashboard.panels.filter((p) => p.type !== 'row');
const panelQueries = dataPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));
const variableQueries = dashboard.templating.list.flatMap((v) => (v.definition ? [{ panel: `variable ${v.name}`, expr: v.definition }] : []));

// --- what the worker exports
const SERIES_LABELS = ['job', 'instance'];
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'];
/** syncctl's series, by name, with their labels; the histogram's series too. */
const syncctlSeries = new Map<string, readonly string[]>();
for (const m of Object.values(METRICS)) syncctlSeries.set(m.name, m.labels);
// The histogram (the only one; a gauge or counter has no such series).
for (const suffix of HISTOGRAM_SUFFIXES) {
  syncctlSeries.set(`${METRICS.batchDurationSeconds.name}${suffix}`, [...METRICS.batchDurationSeconds.labels, ...(suffix === '_bucket' ? ['le'] : [])]);
}
/** Values a label can take, where the contract fixes them. */
const LABEL_VALUES: Record<string, readonly string[]> = { state: TABLE_STATES, status: WAL_STATUSES, op: CHANGE_OPS };

/** prom-client's default process and Node.js series, which the worker exports beside its own. */
async function defaultSeriesNames(): Promise<Set<string>> {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const names = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    names.add(m.name);
    if (String(m.type) === 'histogram') for (const suffix of HISTOGRAM_SUFFIXES) names.add(`${m.name}${suffix}`);
  }
  registry.clear();
  return names;
}

/** Series names a PromQL expression reads: syncctl's, prom-client's defaults (process_, nodejs_) and `up`. */
function seriesNamesIn(expr: string): string[] {
  const names = [...expr.matchAll(/\b(?:syncctl|process|nodejs)_[a-zA-Z0-9_]+/g)].map((m) => m[0]);
  if (/\bup\s*\{/.test(expr)) names.push('up');
  return names;
}

/** Problems with the series, selectors and grouping labels of one expression. */
function seriesProblems(expr: string, defaults: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  const names = seriesNamesIn(expr);
  if (names.length === 0) problems.push('names no series');
  for (const name of names) {
    if (!syncctlSeries.has(name) && !defaults.has(name) && name !== 'up') problems.push(`${name} is not exported by the worker`);
  }
  for (const [, name, matchers] of expr.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g)) {
    const labels = syncctlSeries.get(name!);
    if (!labels) continue;
    for (const [, label, op, value] of matchers!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)) {
      if (!labels.includes(label!) && !SERIES_LABELS.includes(label!)) problems.push(`${name} has no label ${label}`);
      const allowed = LABEL_VALUES[label!];
      if (allowed && op === '=' && !allowed.includes(value!)) problems.push(`${name}{${label}="${value}"}: ${label} is one of ${allowed.join(', ')}`);
    }
  }
  // Grouping labels must belong to a series the expression reads.
  const known = new Set([...SERIES_LABELS, 'le', ...names.flatMap((n) => syncctlSeries.get(n) ?? [])]);
  for (const [, list] of expr.matchAll(/\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)/g)) {
    for (const label of list!.split(',').map((l) => l.trim()).filter(Boolean)) {
      if (!known.has(label)) problems.push(`groups by ${label}, which none of its series has`);
    }
  }
  return problems;
}

/** GitHub's anchor for a Markdown heading. */
const anchorOf = (heading: string) => heading.trim().toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-');

describe('Prometheus alert rules', () => {
  it('pass promtool check rules', () => {
    const { status, output } = promtool('check', 'rules', RULES);
    expect(output, output).toMatch(/SUCCESS/);
    expect(status, output).toBe(0);
  });

  it('pass their unit tests (promtool test rules)', () => {
    const { status, output } = promtool('test', 'rules', RULES_TESTS);
    expect(status, output).toBe(0);
  });

  it('are loaded by the compose Prometheus config (promtool check config)', () => {
    const { status, output } = promtool('check', 'config', PROMETHEUS_CONFIG);
    expect(status, output).toBe(0);
    const config = parse(read(PROMETHEUS_CONFIG)) as { rule_files: string[]; scrape_configs: { job_name: string }[] };
    expect(config.rule_files).toEqual([path.basename(RULES)]);
    // The rules' up{job="syncctl"} depends on this job name.
    expect(config.scrape_configs.map((s) => s.job_name)).toContain('syncctl');
  });

  it('each have a unit test where they fire and one where they do not', () => {
    const suite = parse(read(RULES_TESTS)) as { rule_files: string[]; tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[] };
    expect(suite.rule_files).toEqual([path.basename(RULES)]);
    const cases = suite.tests.flatMap((t) => t.alert_rule_test ?? []);
    const missing = alerts.flatMap(({ alert }) => {
      const mine = cases.filter((c) => c.alertname === alert);
      return [
        ...(mine.some((c) => (c.exp_alerts ?? []).length > 0) ? [] : [`${alert}: no case where it fires`]),
        ...(mine.some((c) => (c.exp_alerts ?? []).length === 0) ? [] : [`${alert}: no case where it does not fire`]),
      ];
    });
    expect(missing).toEqual([]);
    const unknown = cases.map((c) => c.alertname).filter((name) => !alerts.some((a) => a.alert === name));
    expect(unknown).toEqual([]);
  });

  it('each carry a severity, a summary, a description and a runbook_url to their section of docs/runbooks.md', () => {
    const headings = [...read(RUNBOOKS).matchAll(/^## (.+)$/gm)].map((m) => m[1]!.trim());
    const anchors = new Set(headings.map(anchorOf));
    const problems = alerts.flatMap((a) => {
      const p: string[] = [];
      if (!['warning', 'critical'].includes(a.labels?.severity ?? '')) p.push(`${a.alert}: severity is ${a.labels?.severity}`);
      if (!a.annotations?.summary || !a.annotations.description) p.push(`${a.alert}: summary or description missing`);
      const anchor = a.alert.toLowerCase();
      if (a.annotations?.runbook_url !== `${RUNBOOK_URL}#${anchor}`) p.push(`${a.alert}: runbook_url is ${a.annotations?.runbook_url}`);
      if (!anchors.has(anchor)) p.push(`${a.alert}: docs/runbooks.md has no section "## ${a.alert}"`);
      // A table-level alert names its table, every other one its sync (but the process-level ones).
      const text = `${a.annotations?.summary} ${a.annotations?.description}`;
      if (/\btable\b/.test(a.expr) && !text.includes('$labels.table')) p.push(`${a.alert}: annotations do not name the table`);
      if (/\bsync\b/.test(a.expr) && !text.includes('$labels.sync')) p.push(`${a.alert}: annotations do not name the sync`);
      return p;
    });
    expect(problems).toEqual([]);
    // No section without its alert, and every link inside the runbooks resolves.
    expect(headings.filter((h) => !alerts.some((a) => a.alert === h))).toEqual([]);
    const links = [...read(RUNBOOKS).matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]!);
    expect(links.filter((l) => !anchors.has(l))).toEqual([]);
  });

  it('name only series the worker exports, with their labels and label values', async () => {
    const defaults = await defaultSeriesNames();
    const problems = alerts.flatMap((a) => seriesProblems(a.expr, defaults).map((p) => `${a.alert}: ${p}`));
    expect(problems).toEqual([]);
  });

  it('use a distinct name per alert', () => {
    const names = alerts.map((a) => a.alert);
    expect(new Set(names).size).toBe(names.length);
  });
});

describe('Grafana dashboard', () => {
  it('has a query in every panel, each naming only series the worker exports', async () => {
    const defaults = await defaultSeriesNames();
    expect(dataPanels.length).toBeGreaterThan(10);
    expect(dataPanels.filter((p) => !(p.targets ?? []).some((t) => (t.expr ?? '').trim() !== '')).map((p) => p.title)).toEqual([]);
    const problems = [...panelQueries, ...variableQueries].flatMap((q) => seriesProblems(q.expr, defaults).map((p) => `${q.panel}: ${p}`));
    expect(problems).toEqual([]);
  });

  it('has queries Prometheus parses (checked by promtool as recording rules)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'syncctl-dashboard-'));
    try {
      // Grafana's variables, as Grafana substitutes them.
      const promql = (expr: string) => expr.replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m').replaceAll('$sync', '.+');
      const rules = panelQueries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: promql(q.expr) }));
      writeFileSync(path.join(dir, 'dashboard.yml'), stringify({ groups: [{ name: 'dashboard', rules }] }));
      const { status, output } = promtool('check', 'rules', path.join(dir, 'dashboard.yml'));
      expect(status, output).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes its data source from a variable, and its syncs from syncctl_leader', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    expect(variables.get('DS_PROMETHEUS')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(variables.get('sync')).toMatchObject({ type: 'query', definition: 'label_values(syncctl_leader, sync)' });
    const elsewhere = dataPanels.filter((p) => p.datasource?.uid !== '${DS_PROMETHEUS}' || (p.targets ?? []).some((t) => t.datasource?.uid !== '${DS_PROMETHEUS}'));
    expect(elsewhere.map((p) => p.title)).toEqual([]);
    // Panels of the chosen syncs: every query of a syncctl series that has a sync label filters on it.
    const unfiltered = panelQueries.filter((q) => /syncctl_(?!build_info)/.test(q.expr) && !q.expr.includes('sync=~"$sync"'));
    expect(unfiltered).toEqual([]);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('is provisioned by the files docker-compose.yml mounts', () => {
    const provider = parse(read('deploy/grafana/provisioning/dashboards/syncctl.yml')) as { providers: { options: { path: string } }[] };
    const grafana = (parse(read('docker-compose.yml')) as { services: Record<string, { volumes: string[] }> }).services.grafana!;
    expect(grafana.volumes).toContain(`./${DASHBOARD}:${provider.providers[0]!.options.path}/syncctl.json:ro`);
    const datasource = parse(read('deploy/grafana/provisioning/datasources/prometheus.yml')) as { datasources: { type: string; url: string }[] };
    expect(datasource.datasources[0]).toMatchObject({ type: 'prometheus', url: 'http://prometheus:9090' });
  });
});

describe('Kubernetes manifests', () => {
  const models: Record<string, new (data: never) => { validate(): void }> = {
    'apps/v1 Deployment': Deployment,
    'v1 Service': Service,
    'v1 Secret': Secret,
    'v1 ConfigMap': ConfigMap,
    'monitoring.coreos.com/v1 ServiceMonitor': ServiceMonitor,
    'monitoring.coreos.com/v1 PrometheusRule': PrometheusRule,
  };
  const files = readdirSync(at(KUBERNETES)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  type Manifest = { apiVersion: string; kind: string; metadata: { name: string }; spec?: Record<string, unknown>; data?: Record<string, string> };
  const manifests = files.flatMap((file) => parseAllDocuments(read(`${KUBERNETES}/${file}`)).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return { file, manifest: doc.toJS() as Manifest };
  }));
  const find = (kind: string) => manifests.find((m) => m.manifest.kind === kind)!.manifest;

  it('validate against the Kubernetes API and Prometheus Operator schemas', () => {
    const problems: string[] = [];
    for (const { file, manifest } of manifests) {
      const model = models[`${manifest.apiVersion} ${manifest.kind}`];
      if (!model) {
        problems.push(`${file}: no schema for ${manifest.apiVersion} ${manifest.kind}`);
        continue;
      }
      try {
        new model(manifest as never).validate();
      } catch (error) {
        problems.push(`${file}: ${(error as Error).message}`);
      }
    }
    expect(problems).toEqual([]);
    expect(new Set(manifests.map((m) => m.manifest.kind))).toEqual(new Set(['Deployment', 'Service', 'Secret', 'ConfigMap', 'ServiceMonitor', 'PrometheusRule']));
  });

  it('are all in kustomization.yaml, except the Secret example', () => {
    const kustomization = parse(read(`${KUBERNETES}/kustomization.yaml`)) as { resources: string[] };
    expect([...kustomization.resources].sort()).toEqual(files.filter((f) => f !== 'secret.example.yaml'));
  });

  it('run two workers that probe /readyz and /healthz, as a non-root user, with the Secret and the specs', () => {
    const deployment = find('Deployment') as unknown as { spec: { replicas: number; template: { spec: {
      securityContext: { runAsNonRoot: boolean };
      containers: { args: string[]; env: { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
        readinessProbe: { httpGet: { path: string } }; livenessProbe: { httpGet: { path: string } }; resources: { requests?: object; limits?: object } }[];
      volumes: { name: string; configMap?: { name: string } }[];
    } } } };
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0]!;
    expect(deployment.spec.replicas).toBe(2);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(container.readinessProbe.httpGet.path).toBe('/readyz');
    expect(container.livenessProbe.httpGet.path).toBe('/healthz');
    expect(container.resources.requests).toBeDefined();
    expect(container.resources.limits).toBeDefined();
    expect(container.args).toEqual(['run', '/specs', '--metrics-address', '0.0.0.0:9187']);
    const secret = find('Secret') as Manifest & { stringData: Record<string, string> };
    for (const name of ['LAAS_DATABASE_URL', 'ORGS_DATABASE_URL']) {
      expect(container.env.find((e) => e.name === name)?.valueFrom?.secretKeyRef).toEqual({ name: secret.metadata.name, key: name });
      expect(Object.keys(secret.stringData)).toContain(name);
    }
    expect(pod.volumes.find((v) => v.configMap)?.configMap?.name).toBe(find('ConfigMap').metadata.name);
    // The job name the rules expect is the Service's name (the Prometheus Operator's default).
    expect(find('Service').metadata.name).toBe('syncctl');
  });

  it('carry the demo spec as specs/ holds it', () => {
    expect(find('ConfigMap').data?.['laas_to_orgs.sync.ts'], 'deploy/kubernetes/configmap-specs.yaml differs from specs/laas_to_orgs.sync.ts: copy it over')
      .toBe(read('specs/laas_to_orgs.sync.ts'));
  });

  it('hold the PrometheusRule generated from the rules file (node scripts/render-prometheus-rule.ts)', () => {
    expect(read(`${KUBERNETES}/prometheusrule.yaml`), 'out of date: run node scripts/render-prometheus-rule.ts').toBe(renderPrometheusRule(read(RULES)));
  });
});

describe('docker-compose.yml', () => {
  it('passes docker-compose config', () => {
    const { status, output } = runTool('docker-compose', ['config', '-q'], 'apt-get install -y docker-compose');
    expect(status, output).toBe(0);
  });

  it('mounts files that exist, and starts the worker after apply has completed', () => {
    const compose = parse(read('docker-compose.yml')) as { services: Record<string, { volumes?: string[]; command?: string[] | string; depends_on?: Record<string, { condition: string }> }> };
    const mounts = Object.values(compose.services).flatMap((s) => s.volumes ?? []).filter((v) => v.startsWith('./')).map((v) => v.split(':')[0]!);
    expect(mounts.filter((m) => !existsSync(at(m)))).toEqual([]);
    expect(Object.keys(compose.services).sort()).toEqual(['grafana', 'prometheus', 'source', 'syncctl', 'syncctl-apply', 'target']);
    expect(compose.services.syncctl!.depends_on).toEqual({ 'syncctl-apply': { condition: 'service_completed_successfully' } });
    expect(compose.services.syncctl!.command).toEqual(['run', '/specs', '--metrics-address', '0.0.0.0:9187']);
    expect(compose.services['syncctl-apply']!.command).toEqual(['apply', '/specs']);
  });
});
