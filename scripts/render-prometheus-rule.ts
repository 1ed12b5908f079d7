/**
 * deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/syncctl-rules.yml: the same rule
 * groups wrapped in a PrometheusRule for the Prometheus Operator, so the two cannot drift apart
 * (test/unit/deploy.test.ts checks the checked-in file against this output).
 *
 *   node scripts/render-prometheus-rule.ts           writes deploy/kubernetes/prometheusrule.yaml
 *   node scripts/render-prometheus-rule.ts --check   exits 1 when that file is out of date
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

export const RULES_FILE = fileURLToPath(new URL('../deploy/prometheus/syncctl-rules.yml', import.meta.url));
export const PROMETHEUS_RULE_FILE = fileURLToPath(new URL('../deploy/kubernetes/prometheusrule.yaml', import.meta.url));

const HEADER = `# Generated from deploy/prometheus/syncctl-rules.yml by scripts/render-prometheus-rule.ts: do not
# edit; change the rules file and run \`node scripts/render-prometheus-rule.ts\`.
# Your Prometheus resource picks PrometheusRules by label (its ruleSelector, e.g.
# release: kube-prometheus-stack): add that label, e.g. with kustomize's \`labels:\`.
`;

/** The PrometheusRule manifest (YAML text) holding the groups of a Prometheus rules file. */
export function renderPrometheusRule(rulesYaml: string): string {
  const rules: unknown = parse(rulesYaml);
  const groups = typeof rules === 'object' && rules !== null && 'groups' in rules ? rules.groups : undefined;
  if (!Array.isArray(groups) || groups.length === 0) throw new Error('the rules file has no groups');
  const manifest = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'syncctl', labels: { 'app.kubernetes.io/name': 'syncctl' } },
    spec: { groups },
  };
  return HEADER + stringify(manifest, { lineWidth: 0 });
}

if (import.meta.main) {
  const rendered = renderPrometheusRule(readFileSync(RULES_FILE, 'utf8'));
  if (process.argv.includes('--check')) {
    const current = readFileSync(PROMETHEUS_RULE_FILE, 'utf8');
    if (current !== rendered) {
      process.stderr.write('deploy/kubernetes/prometheusrule.yaml is out of date: run node scripts/render-prometheus-rule.ts\n');
      process.exit(1);
    }
  } else {
    writeFileSync(PROMETHEUS_RULE_FILE, rendered);
  }
}
