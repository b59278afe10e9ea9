-- wrk script: every request asks for a URL never asked before, so every request is a cache
-- miss that reaches the origin.
--
--   WRK_PREFIX  path prefix (default /1k/u-); the URL is PREFIX .. thread .. "-" .. counter,
--               and the origin answers any /1k/... path with its 1 KiB body.
--   WRK_LIMIT   if set, each thread stops after that many responses (the memory run).
--   WRK_VARIANTS  if set (N > 1), each URL is asked for N times in a row, with
--               X-Variant: 0 .. N-1 (against the origin's /1k-vary route, which varies on
--               it: N stored variants per URL).

local prefix = os.getenv("WRK_PREFIX") or "/1k/u-"
local limit = tonumber(os.getenv("WRK_LIMIT") or "0") or 0
local variants = tonumber(os.getenv("WRK_VARIANTS") or "1") or 1

local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("thread_id", threads)
end

local counter = 0
request = function()
   counter = counter + 1
   if variants > 1 then
      local url = math.floor((counter - 1) / variants)
      local headers = { ["X-Variant"] = tostring((counter - 1) % variants) }
      return wrk.format(nil, prefix .. (thread_id or 0) .. "-" .. url, headers)
   end
   return wrk.format(nil, prefix .. (thread_id or 0) .. "-" .. counter)
end

if limit > 0 then
   local responses = 0
   response = function(status, headers, body)
      responses = responses + 1
      if responses >= limit then
         wrk.thread:stop()
      end
   end
end
