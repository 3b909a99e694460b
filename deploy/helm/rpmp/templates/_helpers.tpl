{{/* Names: <release>-rpmp unless the release is called rpmp (then rpmp); fullnameOverride wins. */}}
{{- define "rpmp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rpmp.headless" -}}{{ include "rpmp.fullname" . }}-headless{{- end -}}

{{- define "rpmp.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rpmp.labels" -}}
{{ include "rpmp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rpmp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "rpmp.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* The domain every pod's stable DNS name ends in: <pod>.<headless>.<namespace>.svc.<clusterDomain>. */}}
{{- define "rpmp.domain" -}}
{{ include "rpmp.headless" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end -}}

{{/* Every pod's host:port. Each node gets the whole list as --seeds: a node drops its own address from its
seeds (rpmp/server/membership.py), so one list serves every pod of the StatefulSet. */}}
{{- define "rpmp.seeds" -}}
{{- $fullname := include "rpmp.fullname" . -}}
{{- $domain := include "rpmp.domain" . -}}
{{- $seeds := list -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $seeds = append $seeds (printf "%s-%d.%s:%d" $fullname $i $domain (int $.Values.port)) -}}
{{- end -}}
{{- join "," $seeds -}}
{{- end -}}

{{/* Whether the pool's pages are RAM charged to the pod (tmpfs), so the memory request must cover them. */}}
{{- define "rpmp.poolInMemory" -}}
{{- if or (eq .Values.pool.medium "memory") (and (eq .Values.pool.medium "hostPath") .Values.pool.hostPath.memoryBacked) -}}true{{- end -}}
{{- end -}}

{{- define "rpmp.memoryMi" -}}
{{- $pool := ternary (int .Values.pool.sizeMi) 0 (eq (include "rpmp.poolInMemory" .) "true") -}}
{{- add $pool (int .Values.memoryOverheadMi) -}}
{{- end -}}
