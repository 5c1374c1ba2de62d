-- Argo CD health of a logsub.io LogSubscription, from the conditions the
-- controller writes. In argocd-cm:
--   resource.customizations.health.logsub.io_LogSubscription: |
--     <this file>
local hs = {status = "Progressing", message = "waiting for the logsub controller"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "the controller has not reconciled the latest spec yet"
  return hs
end
local ready = nil
local stalled = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" and c.status == "True" then stalled = c end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif stalled ~= nil then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. stalled.message
elseif ready ~= nil then
  hs.message = ready.reason .. ": " .. ready.message
end
return hs
